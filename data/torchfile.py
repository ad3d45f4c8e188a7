"""Reading torch files as data: nothing in a file ever executes.

Every torch file framesel opens (agent checkpoints, fine-tuned backbone weights) goes through
:func:`load_torch_data`, which uses ``torch.load(..., weights_only=True)``: the unpickler then
builds only tensors and plain containers and refuses any other global, so a pickle whose
``__reduce__`` calls ``os.system`` is an error, not a command. torch is imported lazily, so
importing this module costs nothing for commands that never read a torch file.

Checkpoints from other tools' training loops carry their bookkeeping as Python objects
(mmengine's ``HistoryBuffer`` in ``message_hub``, numpy scalars in ``meta``), which the
data-only reader refuses. :func:`load_foreign_torch_data` reads those too: every refused
global becomes an :class:`Inert` placeholder class that takes its arguments and state and
does nothing with them, so the tensors load and no foreign code is imported or run. Globals
whose module torch blocks outright (``os``, ``posix``, ``subprocess``, ``builtins`` calls
…) are still refused: a file that reaches for them is not a checkpoint.

safetensors files (:func:`load_safetensors`) hold a JSON header and raw tensor bytes: there is
nothing to unpickle, so they are read as they are.
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

from data.errors import InputError

# What torch.load raises on a file that is not a (complete) torch file: a bad pickle, a
# truncated or foreign zip, a legacy tar, bytes that decode to nonsense.
_NOT_TORCH = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError,
              IndexError, TypeError, AttributeError)
# torch words it "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module x is blocked"
_GLOBAL = re.compile(r"\bGLOBAL ([\w.]+)")
_OPERAND = re.compile(r"Unsupported operand (\d+)")
# a refused global: group 1 its name, group 2 set when torch blocks its whole module
_REFUSED = re.compile(r"GLOBAL ([\w.]+)( whose module [\w.]+ is blocked)?")


def load_torch_data(path, *, what: str = "torch file", map_location="cpu", allowed=(),
                    hint: str = ""):
    """The object in the torch file ``path``, read with ``weights_only=True``.

    ``allowed``: extra classes the unpickler may build (``torch.serialization.safe_globals``),
    for known harmless ones only. ``hint`` is appended when the file holds a refused
    Python object. Raises InputError naming ``what``, the file and the cause for a missing
    path, a directory, an empty file, or anything that is not plain torch data.
    """
    _check_file(path, what)
    try:
        return _weights_only_load(path, map_location, allowed)
    except _NOT_TORCH as err:
        raise InputError(f"{what} {path}: {load_error_cause(err, hint)}") from None


class Inert:
    """A placeholder for a global a foreign checkpoint names (``Inert.qualname`` says which):
    built from any arguments, given any state, it keeps nothing and runs nothing."""

    qualname = ""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self):
        return f"<inert {self.qualname}>"


def load_foreign_torch_data(path, *, what: str = "checkpoint", map_location="cpu", rounds: int = 64):
    """:func:`load_torch_data`, but the globals it refuses (except those of modules torch
    blocks) are read as :class:`Inert` placeholders (module docstring). Returns (object,
    sorted qualified names of the placeholders used)."""
    import torch

    _check_file(path, what)
    names: set[str] = set()
    try:
        names.update(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (ValueError, RuntimeError, OSError, pickle.UnpicklingError):
        pass     # not a zip checkpoint (torch's legacy format): found one at a time below
    for _ in range(rounds):
        stubs = [(type(n.rsplit(".", 1)[-1], (Inert,), {"qualname": n}), n) for n in sorted(names)]
        try:
            return _weights_only_load(path, map_location, stubs), sorted(names)
        except _NOT_TORCH as err:
            found = _REFUSED.search(str(err))
            if found is None or found.group(2) or found.group(1) in names:
                raise InputError(f"{what} {path}: {load_error_cause(err)}") from None
            names.add(found.group(1))
    raise InputError(f"{what} {path}: holds more than {rounds} kinds of Python object; refused")


def load_safetensors(path, *, what: str = "checkpoint") -> tuple[dict, dict]:
    """(tensors, metadata) of the safetensors file ``path``: a JSON header and raw tensor
    bytes, nothing to unpickle. InputError naming ``what``, the file and the cause for a
    missing path, a directory, an empty or damaged file."""
    from safetensors import SafetensorError, safe_open

    _check_file(path, what)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{what} {path}: not a readable safetensors file ({err})") from None


def save_safetensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write ``tensors`` ({name: tensor}, made contiguous) and string ``metadata`` to ``path``
    as safetensors (written beside, then renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def state_sha256(state: dict) -> str:
    """sha256 of a module's weights: each name, then its values as float32 bytes, in
    ``state_dict`` order (a trained head's identity in a store; a seeded network's spec)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for name, value in state.items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().astype(np.float32).tobytes())
    return digest.hexdigest()


def _check_file(path, what: str) -> None:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes)")


def _weights_only_load(path, map_location, allowed):
    import torch

    with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
        # a plain pickle of protocol > 2 makes torch warn before it refuses the file
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location=map_location, weights_only=True)


def load_error_cause(err: BaseException, hint: str = "") -> str:
    """One line saying why torch.load refused a file (its own message spans a page)."""
    text = str(err)
    found = _GLOBAL.search(text)
    if found:
        return (f"not a readable torch file: it holds a Python object ({found.group(1)}) that would "
                f"run code when loaded; framesel loads torch files as data only and refused it"
                + (f". {hint}" if hint else ""))
    found = _OPERAND.search(text)
    if found:
        return (f"not a readable torch file: its pickle uses an operation (opcode {found.group(1)}) a "
                "data-only reader refuses; it is random bytes, a plain pickle or a foreign format"
                + (f". {hint}" if hint else ""))
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    cause = f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__
    return f"not a readable torch file (truncated, or not written by torch.save): {cause}"
