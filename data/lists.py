"""Video lists and split files: mmaction2 lists, UCF101 and HMDB51 splits, class folders.

Every reader returns a :class:`VideoList`: the video paths exactly as the list gives them
(relative to some root directory), their labels, the class names, and the sha256 of the
bytes that were parsed, so that a feature store can record which list it was built from.

Conventions (GUIDE §4), handled here so that nobody downstream has to know them:

- mmaction2: ``path label [label ...]``, labels 0-based; several labels on a line make the
  list multi-label. The labels are the trailing integer tokens and the path is the rest, so
  a path may hold spaces (``my clip.mp4 3``), unless a token after a video file name is not
  an integer (``a.mp4 1.0``: a bad label, not a path). Raw-frame lists (``frame_dir
  total_frames label``) are not supported: their frame count would be read as a second label.
- UCF101: ``classInd.txt`` is 1-based; ``trainlistNN.txt`` lines are ``path label`` with
  1-based labels; ``testlistNN.txt`` lines carry no label, which comes from the class folder
  of the path. Class folders are matched case-insensitively (``HandstandPushups`` vs the
  file names ``v_HandStandPushups_*``). CRLF line endings are accepted everywhere.
- HMDB51: ``<class>_test_split<k>.txt`` lines ``name 0|1|2`` (0 unused, 1 train, 2 test),
  often with trailing spaces; classes are indexed in sorted name order.

Duplicate paths in one list are an error: they would silently double-weight a video in
training and metrics, and a store keyed by list position would hold the video twice.

Paths stay under the root: a path with a ``..`` part is always an error (a list from
elsewhere must not reach files beside the dataset); an absolute path is accepted only when
no root is given (``framesel extract`` without ``--root``), where paths stand for themselves.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from data.errors import InputError, UnknownNameError
# the official splits' readers (UCF101, HMDB51, class folders) register themselves on import
from data.splits import read_hmdb51_split  # noqa: F401 (the front door: data.lists.read_hmdb51_split)
from data.videolist import (HMDB_FILE, VIDEO_EXTENSIONS, VideoList, check_exist, check_path,  # noqa: F401
                            INTEGER, check_unique, nonempty, read_classes, read_lines, readers, register_format)

log = logging.getLogger(__name__)
_UCF_LIST_NAME = re.compile(r"^(train|test)list\d+\.txt$", re.IGNORECASE)


def available_formats() -> tuple[str, ...]:
    return tuple(sorted(readers()))


def read_list(path, *, fmt: str = "auto", classes=None, root=None, multilabel: bool | None = None,
              require_exist: bool = True) -> VideoList:
    """Read a video list or a folder of class folders.

    Args:
        path: list file, or directory of class folders (``fmt="folder"``).
        fmt: ``"auto"``, ``"mmaction2"``, ``"ucf101"`` or ``"folder"``. Auto: a directory is
            a folder; ``trainlistNN.txt``/``testlistNN.txt`` with ``classInd.txt`` beside it
            is UCF101; anything else mmaction2. HMDB51 splits need a split number and a
            subset: use :func:`read_hmdb51_split`.
        classes: class names in index order, or a file of them (one a line; for UCF101 a
            ``classInd.txt``). Default: from the format (classInd beside a UCF101 list,
            sorted folder names), else ``class_<i>`` up to the largest label.
        root: directory the paths are relative to. When given, no path may be absolute and
            every video must exist under it (a wrong root fails here, not 13,000 times during
            extraction); for a folder, paths are made relative to it (default: the folder
            itself). Without it, absolute paths are taken as they are. ``..`` is never allowed.
        multilabel: mmaction2 only; None detects (a line with two or more labels).
        require_exist: with ``root``, check that every video exists (extraction passes False:
            it records a missing video as failed and goes on).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such list file or directory")
    if fmt == "auto":
        fmt = _detect_format(path)
    if fmt not in readers():
        raise UnknownNameError("list format", fmt, readers())
    kwargs = {"multilabel": multilabel} if fmt == "mmaction2" else {}
    if multilabel is not None and fmt != "mmaction2":
        raise InputError(f"multilabel= applies to mmaction2 lists only, not {fmt}")
    vl = readers()[fmt](path, classes=classes, root=root, **kwargs)
    if root is not None and fmt != "folder" and require_exist:
        check_exist(vl.paths, Path(root))
    log.debug("read %d videos, %d classes from %s", len(vl), vl.num_classes, vl.source)
    return vl


def _detect_format(path: Path) -> str:
    if path.is_dir():
        if any(HMDB_FILE.match(p.name) for p in path.glob("*_test_split*.txt")):
            raise InputError(f"{path} holds HMDB51 split files: use read_hmdb51_split(dir, split=k, subset=...)")
        return "folder"
    if _UCF_LIST_NAME.match(path.name) and (path.parent / "classInd.txt").is_file():
        return "ucf101"
    return "mmaction2"

# ----------------------------------------------------------------------------- mmaction2

@register_format("mmaction2")
def _read_mmaction2(path: Path, *, classes=None, root=None, multilabel=None) -> VideoList:
    hasher = hashlib.sha256()
    lines = read_lines([path], hasher)[0]
    names = read_classes(classes)
    if classes is not None and isinstance(classes, (str, Path)):
        hasher.update(Path(classes).read_bytes())  # the class names are part of what was read
    paths, wheres, label_sets = [], [], []
    for lineno, ln in lines:
        where = f"{path}:{lineno}"
        video, labels = _mmaction2_line(ln, where)
        check_path(video, where, root)
        _check_label_values(labels, where, names)
        paths.append(video)
        wheres.append(where)
        label_sets.append(labels)
    nonempty(paths, path)
    check_unique(paths, wheres)
    if multilabel is None:
        multilabel = any(len(ls) > 1 for ls in label_sets)
    num_classes = len(names) if names else 1 + max((max(ls) for ls in label_sets if ls), default=-1)
    names = names or tuple(f"class_{i}" for i in range(num_classes))
    labels = _multi_hot(label_sets, num_classes) if multilabel else _single(label_sets, wheres, paths)
    return VideoList(tuple(paths), labels, names, multilabel, f"mmaction2:{path.resolve()}", hasher.hexdigest())


def _mmaction2_line(ln: str, where: str) -> tuple[str, list[int]]:
    """``path label [label ...]`` -> (path, labels): the labels are the trailing integer
    tokens, the path is the rest of the line as written (inner spaces kept). A token after a
    video file name that is not an integer is a bad label, not part of the path."""
    spans = [m.span() for m in re.finditer(r"\S+", ln)]
    tokens = [ln[a:b] for a, b in spans]
    k = len(tokens)
    while k > 1 and INTEGER.fullmatch(tokens[k - 1]):
        k -= 1
    for j in range(k - 1):
        if Path(tokens[j]).suffix.lower() in VIDEO_EXTENSIONS:
            bad = next(t for t in tokens[j + 1:k] if not INTEGER.fullmatch(t))
            raise InputError(f"{where}: label {bad!r} is not an integer (after the video "
                             f"{tokens[j]!r}; a path with spaces must end in its file name)")
    return ln[: spans[k - 1][1]], [int(t) for t in tokens[k:]]


def _check_label_values(labels: list[int], where: str, names):
    for lab in labels:
        if lab < 0 or (names is not None and lab >= len(names)):
            hi = f"{len(names) - 1}" if names is not None else "inf"
            raise InputError(f"{where}: label {lab} out of range [0, {hi}]")
    if len(set(labels)) != len(labels):
        raise InputError(f"{where}: a label is repeated on the line")


def _multi_hot(label_sets: list[list[int]], num_classes: int) -> np.ndarray:
    out = np.zeros((len(label_sets), num_classes), np.uint8)
    for i, ls in enumerate(label_sets):
        out[i, ls] = 1
    return out


def _single(label_sets: list[list[int]], wheres: list[str], paths: list[str]) -> np.ndarray:
    has = [bool(ls) for ls in label_sets]
    if any(has) and not all(has):
        # a label missing on one line of a labelled list is a typo, not a semi-supervised list
        i = has.index(False) if has[0] else has.index(True)
        got = f"labels {label_sets[i]}" if has[i] else "no label"
        raise InputError(f"{wheres[i]}: some lines carry a label and others do not (this line reads "
                         f"as path {paths[i]!r} with {got}; pass multilabel=True if lines may have "
                         "zero or several labels)")
    return np.array([ls[0] if ls else -1 for ls in label_sets], np.int32)


def write_list(path, vl: VideoList, *, classes_path=None) -> None:
    """Write ``vl`` as an mmaction2 list (``path label [label ...]``, 0-based), LF endings.

    Unlabelled videos (-1) and multi-label rows without a positive are written as a bare
    path. ``classes_path``, when given, receives the class names one a line.
    """
    lines = []
    for p, lab in zip(vl.paths, vl.labels):
        if any(c.isspace() for c in p):
            raise InputError(f"path {p!r} contains whitespace, which mmaction2 lists cannot hold")
        labs = np.flatnonzero(lab).tolist() if vl.multilabel else ([int(lab)] if lab >= 0 else [])
        lines.append(" ".join([p, *map(str, labs)]))
    Path(path).write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    if classes_path is not None:
        Path(classes_path).write_text("".join(c + "\n" for c in vl.classes), encoding="utf-8")


def subset(vl: VideoList, indices) -> VideoList:
    """The videos at ``indices`` (ints or a (V,) bool mask), in that order.

    ``classes`` are kept (label indices stay valid). ``sha256`` becomes the hash of the
    parent's sha256 and the indices, so a store built from a subset is not mistaken for
    one built from the whole list.
    """
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (len(vl),):
            raise InputError(f"boolean mask has shape {idx.shape}, expected ({len(vl)},)")
        idx = np.flatnonzero(idx)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise InputError("indices must be a 1-D sequence of integers or a boolean mask")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -len(vl) or idx.max() >= len(vl)):
        raise InputError(f"indices out of range for a list of {len(vl)} videos")
    idx = idx % max(len(vl), 1)
    if len(np.unique(idx)) != len(idx):
        raise InputError("indices repeat a video; a list may not hold a path twice")
    digest = hashlib.sha256(vl.sha256.encode() + idx.tobytes()).hexdigest()
    return VideoList(tuple(vl.paths[i] for i in idx), vl.labels[idx], vl.classes, vl.multilabel,
                     f"subset({vl.source}, n={idx.size})", digest)
