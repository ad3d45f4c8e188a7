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
loading. An agent may also be released as safetensors + JSON (:func:`write_safetensors`,
``framesel export AGENT.pt --out AGENT.safetensors``): read the same way, without its
training state.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePath

import numpy as np
import torch
from torch.torch_version import TorchVersion

from agents.registry import selector_class
from data.errors import InputError, StoreError, UnknownNameError
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


# A released agent as safetensors: its weights as tensors ``state_dict.<name>``, everything
# else of BASE_KEYS as JSON in the header's metadata under this key (no optimizer or RNG
# state: it rebuilds the agent, it does not resume training).
SAFETENSORS_KEY = "framesel_checkpoint"


def write_safetensors(ck: dict, path) -> None:
    """Write checkpoint ``ck`` (from :func:`read_checkpoint`) as safetensors + JSON at ``path``."""
    from data.torchfile import save_safetensors

    rest = {k: v for k, v in ck.items() if k in BASE_KEYS and k != "state_dict"}
    try:
        meta = json.dumps(rest, sort_keys=True)
    except TypeError as err:
        raise InputError(f"agent checkpoint for {path}: {err}") from None
    save_safetensors({f"state_dict.{k}": v for k, v in ck["state_dict"].items()}, path,
                     metadata={SAFETENSORS_KEY: meta})


def _read_safetensors(path) -> dict:
    from data.torchfile import load_safetensors

    tensors, meta = load_safetensors(path, what="agent checkpoint")
    try:
        ck = json.loads(meta[SAFETENSORS_KEY])
    except (KeyError, json.JSONDecodeError):
        raise InputError(f"agent checkpoint {path} is a safetensors file but not a framesel agent "
                         f"(no {SAFETENSORS_KEY!r} JSON in its metadata)") from None
    if not isinstance(ck, dict):
        raise InputError(f"agent checkpoint {path}: its {SAFETENSORS_KEY!r} metadata is not a JSON object")
    ck["state_dict"] = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    return ck


def read_checkpoint(path, *, map_location="cpu") -> dict:
    """The checkpoint dict at ``path``, loaded as data (weights_only; a ``.safetensors``
    agent: tensors and JSON) and checked to be a framesel agent checkpoint of a readable
    format. Raises InputError naming the file and the cause otherwise (missing, a directory,
    empty, random bytes, a pickle holding code, a torch file of something else)."""
    if Path(path).suffix == ".safetensors":
        ck = _read_safetensors(path)
    else:
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


# What an agent's training read (its checkpoint's ``store`` record, agents/train_stage.py), in the
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


# ----------------------------------------------------------------------------- an agent from its file

def agent_from_checkpoint(ck: dict, path):
    """Rebuild the agent a checkpoint dict (from :func:`read_checkpoint`) describes: its
    class, config, shapes, seed, weights, store identity and history."""
    from agents.options import make_config

    try:
        cls = selector_class(ck["agent"])
    except UnknownNameError as err:
        raise InputError(f"agent checkpoint {path}: {err}") from None
    if not cls.learned:
        raise InputError(f"agent checkpoint {path} names {ck['agent']!r}, a baseline, not an agent")
    config = make_config(cls.Config, trained_config(cls.Config, ck), owner=f"agent checkpoint {path}: {ck['agent']}")
    agent = cls(config, num_classes=ck["num_classes"], feature_dim=ck["feature_dim"], seed=ck["seed"])
    restore_weights(agent, ck, path)
    agent.store_identity = dict(ck.get("store") or {})
    return agent


def restore_weights(agent, ck: dict, path) -> None:
    """Load a checkpoint dict's weights and history into ``agent`` (for load_agent and for
    a resumed run alike); weights that do not fit are an InputError naming the file."""
    try:
        agent.module.load_state_dict(ck["state_dict"])
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0][:300]
        raise InputError(f"agent checkpoint {path}: its weights do not fit {ck['agent']} ({first})") from None
    agent.history = list(ck.get("history") or [])


def load_agent(path, *, map_location="cpu"):
    """Rebuild an agent from its checkpoint alone, read as data (never executed)."""
    return agent_from_checkpoint(read_checkpoint(path, map_location=map_location), path)


def append_jsonl(path, row: dict) -> None:
    """One training-log row per line (reward, entropy, fraction kept, loss per epoch)."""
    if path is not None:
        _write_jsonl(path, [row], "a")


def write_jsonl(path, rows) -> None:
    """Replace the training log at ``path`` with ``rows`` (a fresh run: none; a resumed
    run: the checkpoint's history, so rows of an epoch killed after its checkpoint go)."""
    _write_jsonl(path, rows, "w")


def _write_jsonl(path, rows, mode: str) -> None:
    try:
        with open(path, mode, encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    except OSError as err:
        raise StoreError(f"cannot write training log {path}: {err.strerror or err}") from None
