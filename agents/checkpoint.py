"""Agent checkpoints are data: plain Python values and tensors, read without running code.

Format 2 (written since framesel issue 10) is a dict of

- ``framesel_checkpoint``: 2; ``agent``: registry name; ``config``: {field: int | float |
  bool | str | list}; ``num_classes``, ``feature_dim``, ``seed``: int;
- ``store``: the store identity (str / int / None values); ``history``: [{str: float | int |
  str}] one row per epoch; ``versions``: {str: str};
- ``state_dict``: {str: tensor}; and while resumable ``optimizer`` (torch's state_dict:
  tensors, numbers, tuples), ``epoch`` (int, epochs done), ``rng`` ({str: uint8 tensor or a
  list of them}), agent extras (``baseline``, ``stage``); ``command`` (str), ``finished`` (bool).

:func:`to_plain` converts what an agent hands over (numpy scalars, paths, OrderedDicts) and
refuses anything else, so nothing else is ever written; :func:`read_checkpoint` is the one
reader (``load_agent`` and training resume both use it). Format 1 files of earlier framesel
versions are the same dict except for ``versions.torch``, pickled as torch's own
``TorchVersion`` (a ``str`` subclass): that one harmless class is allow-listed so they keep
loading.
"""
from __future__ import annotations

from pathlib import Path, PurePath

import numpy as np
import torch
from torch.torch_version import TorchVersion

from data.errors import InputError
from data.identity import differences
from data.torchfile import load_torch_data

FORMAT = 2
READABLE = (1, 2)
# Keys every checkpoint has; the rest is the training state a resumed run needs.
BASE_KEYS = ("framesel_checkpoint", "agent", "config", "num_classes", "feature_dim", "seed", "store",
             "history", "state_dict", "versions", "command", "finished")
_REQUIRED = {"agent": str, "config": dict, "num_classes": int, "feature_dim": int, "seed": int,
             "state_dict": dict}
HINT = ("If it is an agent checkpoint of an older framesel, re-train (or convert) it: agent "
        "checkpoints hold only plain values and tensors")


def to_plain(obj, where: str = "checkpoint"):
    """``obj`` with numpy scalars/arrays, paths, tuples kept, str subclasses and OrderedDicts
    turned into plain Python values and tensors. Raises TypeError naming the first value that
    is none of these (a programming error: it would make the file unreadable as data)."""
    if obj is None or type(obj) in (bool, int, float, str, bytes) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, str):                       # TorchVersion and other str subclasses
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} is not plain data")
            out[k] = to_plain(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} is not plain data")


def non_plain(obj, where: str = "checkpoint") -> list[str]:
    """Where ``obj`` holds anything but None, bool, int, float, str, bytes, tensors and
    dict / list / tuple of them (exact types: no subclasses, no numpy). [] when plain."""
    if obj is None or type(obj) in (bool, int, float, str, bytes) or type(obj) is torch.Tensor:
        return []
    if type(obj) is dict:
        bad = [f"{where}: key {k!r}" for k in obj if type(k) not in (str, int)]
        return bad + [p for k, v in obj.items() for p in non_plain(v, f"{where}.{k}")]
    if type(obj) in (list, tuple):
        return [p for i, v in enumerate(obj) for p in non_plain(v, f"{where}[{i}]")]
    return [f"{where}: {type(obj).__module__}.{type(obj).__qualname__}"]


def read_checkpoint(path, *, map_location="cpu") -> dict:
    """The checkpoint dict at ``path``, loaded as data (weights_only) and checked to be a
    framesel agent checkpoint of a readable format. Raises InputError naming the file and
    the cause otherwise (missing, a directory, empty, random bytes, a pickle holding code,
    a torch file of something else)."""
    ck = load_torch_data(path, what="agent checkpoint", map_location=map_location,
                         allowed=(TorchVersion,), hint=HINT)
    if not isinstance(ck, dict) or "framesel_checkpoint" not in ck:
        what = f"a dict with keys {', '.join(map(str, list(ck)[:6]))}" if isinstance(ck, dict) \
            else f"a {type(ck).__name__}"
        raise InputError(f"agent checkpoint {path} is a torch file but not a framesel agent checkpoint "
                         f"(it holds {what})")
    version = ck["framesel_checkpoint"]
    if version not in READABLE:
        raise InputError(f"agent checkpoint {path} has format {version!r}; this framesel reads "
                         f"formats {', '.join(map(str, READABLE))} (a newer framesel wrote it?)")
    wrong = [f"{k} ({type(ck.get(k)).__name__}, expected {t.__name__})" for k, t in _REQUIRED.items()
             if not isinstance(ck.get(k), t) or isinstance(ck.get(k), bool)]
    if wrong:
        raise InputError(f"agent checkpoint {path} is damaged: missing or wrong {', '.join(wrong)}")
    try:
        return to_plain(ck, str(Path(path).name))
    except TypeError as err:        # torch.dtype, torch.Size ...: data torch admits, ours never holds
        raise InputError(f"agent checkpoint {path} is damaged: {err}") from None


# What an agent's training read (its checkpoint's ``store`` record, agents/stage.py), in the
# keys a resumed run and the seeds of one method must share: the stream(s), the training list,
# the features (data/identity.features_identity) and the logits (logits_identity) it read.
# Checkpoints written before the features were recorded compare their settings hash instead.
TRAINING_IDENTITY = ("stream", "observer", "second_stream", "train_list_sha256", "features", "logits")


def training_identity(store_record: dict) -> dict:
    """The keys of :data:`TRAINING_IDENTITY` a checkpoint's store record holds (an older
    record without ``features``: its ``config_sha256`` and ``schema`` instead)."""
    rec = store_record or {}
    out = {k: rec[k] for k in TRAINING_IDENTITY if k in rec}
    if "features" not in rec:
        out.update({k: rec[k] for k in ("config_sha256", "schema") if k in rec})
    return out


def training_differences(old: dict, new: dict) -> list[str]:
    """Differences (data.identity.differences) between two store records' training
    identities, over the keys both record."""
    a, b = training_identity(old), training_identity(new)
    common = set(a) & set(b)
    return differences({k: a[k] for k in common}, {k: b[k] for k in common})


def trained_config(Config: type, ck: dict) -> dict:
    """The config items checkpoint ``ck`` was trained with: its stored ones, and for a field
    added after the file was written the value it stands for (``Config.BEFORE_THE_FIELD``)."""
    return {**getattr(Config, "BEFORE_THE_FIELD", {}), **ck["config"]}


def check_resumable(agent, ck: dict, path) -> None:
    """Refuse to continue ``ck`` (a checkpoint at ``path``) with ``agent`` unless it is a
    resumable checkpoint of the same agent, config (only ``epochs`` may change), seed,
    shapes and store; the message names every difference."""
    import dataclasses

    if ck["agent"] != agent.name:
        raise InputError(f"{path} is a checkpoint of agent {ck['agent']!r}, not {agent.name!r}")
    if "optimizer" not in ck or "epoch" not in ck:
        raise InputError(f"{path} is a finished checkpoint without its optimizer state (written by an "
                         "older framesel): it cannot be resumed or extended; use another --out, or "
                         "delete it to train again")
    plain = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    mine = {k: plain(v) for k, v in dataclasses.asdict(agent.config).items()}
    theirs = {k: plain(v) for k, v in trained_config(type(agent.config), ck).items()}
    diffs = [f"{k} {theirs.get(k)!r} (this run: {mine.get(k)!r})" for k in sorted(set(mine) | set(theirs))
             if k != "epochs" and mine.get(k) != theirs.get(k)]
    for key in ("seed", "num_classes", "feature_dim"):
        if ck[key] != getattr(agent, key):
            diffs.append(f"{key} {ck[key]!r} (this run: {getattr(agent, key)!r})")
    diffs += [f"store {d} (checkpoint vs this run)"
              for d in training_differences(ck.get("store") or {}, agent.store_identity or {})]
    if diffs:
        raise InputError(f"{path} was trained with " + ", ".join(diffs) + "; resuming needs the same "
                         "config, seed and store (only epochs may change); use another --out")
    done, total = int(ck["epoch"]), agent.total_epochs()
    if done > total:
        raise InputError(f"{path} has already trained {done} epochs, more than the {total} this run "
                         f"asks for (epochs={agent.config.epochs}); a run cannot be shortened")
