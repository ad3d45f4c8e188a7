"""The video list's floor: :class:`VideoList`, the list-format registry and the line-level
checks every reader shares (UTF-8 lines with their numbers, integers, class names, paths
under the root, duplicates). :mod:`data.lists` (the front door, mmaction2 lists) and
:mod:`data.splits` (UCF101, HMDB51, class folders) both read through them; the conventions
are in :mod:`data.lists`' docstring."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from data.errors import InputError

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv", ".3gp", ".ogv"}
)
HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>\d+)\.txt$")
HMDB_SUBSETS = {"train": 1, "test": 2}


@dataclass(frozen=True, eq=False)
class VideoList:
    """A parsed video list.

    Attributes:
        paths: (V,) video paths relative to a root directory, exactly as the list gives them.
        labels: (V,) int32 0-based class indices (-1 = unlabelled), or (V, C) uint8 multi-hot
            when ``multilabel``. Stored read-only.
        classes: (C,) class names in index order (``class_<i>`` when the list names none).
        multilabel: whether ``labels`` is multi-hot.
        source: what was parsed, ``"<format>:<absolute path>"``.
        sha256: hex sha256 of the parsed file bytes concatenated in a fixed order (for a
            single list file, equal to ``sha256sum`` of that file).
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    multilabel: bool
    source: str
    sha256: str

    def __post_init__(self):
        labels = np.asarray(self.labels)
        _check_labels(labels, len(self.paths), len(self.classes), self.multilabel)
        labels = np.array(labels, dtype=np.uint8 if self.multilabel else np.int32, copy=True)
        labels.setflags(write=False)  # frozen means frozen: nobody edits labels in place
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __eq__(self, other):
        if not isinstance(other, VideoList):
            return NotImplemented
        return (self.paths == other.paths and self.classes == other.classes
                and self.multilabel == other.multilabel
                and np.array_equal(self.labels, other.labels))

    __hash__ = None  # labels are an array: equal lists need not hash alike


def _check_labels(labels: np.ndarray, num_videos: int, num_classes: int, multilabel: bool):
    want = (num_videos, num_classes) if multilabel else (num_videos,)
    if labels.shape != want:
        raise InputError(f"labels have shape {labels.shape}, expected {want}")
    if labels.size and not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InputError(f"labels must be integers, not {labels.dtype}")
    if multilabel:
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise InputError("multi-hot labels must be 0 or 1")
    elif labels.size and (labels.min() < -1 or labels.max() >= num_classes):
        raise InputError(f"labels must lie in [-1, {num_classes - 1}]")


# ----------------------------------------------------------------------------- registry

_READERS: dict[str, Callable[..., VideoList]] = {}


def register_format(name: str):
    """Register ``fn(path: Path, classes, root) -> VideoList`` as list format ``name``."""

    def deco(fn):
        if name in _READERS:
            raise ValueError(f"list format {name!r} is already registered")
        _READERS[name] = fn
        return fn
    return deco


def readers() -> dict[str, Callable[..., VideoList]]:
    """The registered list formats: name -> reader (data.splits registers its own on import)."""
    return _READERS



def check_exist(paths: Sequence[str], root: Path):
    if not root.is_dir():
        raise InputError(f"root {root} is not a directory")
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(paths)} videos do not exist under root {root}, "
                         f"e.g. {', '.join(missing[:3])}")


# ----------------------------------------------------------------------------- line parsing

def read_lines(files: Sequence[Path], hasher) -> list[list[tuple[int, str]]]:
    """Read files as UTF-8 (CRLF or LF), feeding their bytes to ``hasher`` in order.

    Returns, per file, the non-blank lines as ``(1-based line number, stripped text)``.
    """
    out = []
    for f in files:
        raw = f.read_bytes()
        hasher.update(raw)
        try:
            text = raw.decode("utf-8-sig")  # tolerate a BOM written by Windows editors
        except UnicodeDecodeError as err:
            raise InputError(f"{f}: not UTF-8 text ({err})") from None
        # split on \n only: str.splitlines would also split on \x0b, \x1c, \u2028, ...
        lines = [(i, ln.strip()) for i, ln in enumerate(text.split("\n"), start=1)]
        out.append([(i, ln) for i, ln in lines if ln])
    return out


INTEGER = re.compile(r"[+-]?\d+")


def parse_int(token: str, where: str, what: str = "label") -> int:
    if not INTEGER.fullmatch(token):
        raise InputError(f"{where}: {what} {token!r} is not an integer")
    return int(token)


def read_classes(classes, *, one_based_index: bool = False) -> tuple[str, ...] | None:
    """Class names from a sequence, a one-name-a-line file, or a ``classInd.txt``."""
    if classes is None:
        return None
    if isinstance(classes, (str, Path)):
        f = Path(classes)
        if not f.is_file():
            what = "is a directory, not a file" if f.is_dir() else "does not exist"
            raise InputError(f"classes file {f} {what}: give a file of class names, one a line")
        lines = read_lines([f], hashlib.sha256())[0]
        names = parse_class_ind(f, lines) if one_based_index else [ln for _, ln in lines]
    else:
        names = [str(c) for c in classes]
    if not names:
        raise InputError(f"no class names in {classes!r}")
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise InputError(f"class name {dup!r} appears twice in {classes!r}")
    return tuple(names)


def parse_class_ind(f: Path, lines) -> list[str]:
    """``classInd.txt``: ``1 ApplyEyeMakeup`` ... with consecutive 1-based indices."""
    names = []
    for lineno, ln in lines:
        parts = ln.split()
        where = f"{f}:{lineno}"
        if len(parts) != 2:
            raise InputError(f"{where}: expected 'index name', got {ln!r}")
        idx = parse_int(parts[0], where, "class index")
        if idx != len(names) + 1:
            raise InputError(f"{where}: class index {idx}, expected {len(names) + 1} (1-based, in order)")
        names.append(parts[1])
    return names


def check_path(p: str, where: str, root) -> None:
    """A list path must stay under the root (module docstring): no ``..`` part, and absolute
    only when no root is given."""
    if ".." in re.split(r"[\\/]", p):
        raise InputError(f"{where}: path {p!r} climbs out of the root with '..'; list paths must "
                         "lie under the root directory (--root)")
    if root is not None and (p.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", p)):
        raise InputError(f"{where}: path {p!r} is absolute but a root ({root}) was given: write it "
                         "relative to the root (--root), or give no --root to take absolute paths as they are")


def check_unique(paths: list[str], linenos: list[str]):
    first: dict[str, str] = {}
    for p, where in zip(paths, linenos):
        if p in first:
            raise InputError(f"{where}: duplicate path {p!r} (first at {first[p]})")
        first[p] = where


def nonempty(paths, what):
    if not paths:
        raise InputError(f"{what}: the list is empty")
