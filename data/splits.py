"""The official split files and class folders: UCF101 (``classInd.txt``, ``train/testlistNN``),
HMDB51 (``<class>_test_split<k>.txt``) and a folder of class folders. Their conventions are
in :mod:`data.lists`, the front door that registers these readers; import from there.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from data.errors import InputError
from data.videolist import (HMDB_FILE, HMDB_SUBSETS, VIDEO_EXTENSIONS, VideoList, check_exist, check_path,
                            check_unique, nonempty, parse_int, read_classes, read_lines, register_format)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- UCF101

@register_format("ucf101")
def _read_ucf101(path: Path, *, classes=None, root=None) -> VideoList:
    class_file = Path(classes) if isinstance(classes, (str, Path)) else path.parent / "classInd.txt"
    if classes is not None and not isinstance(classes, (str, Path)):
        names, class_bytes = read_classes(classes), b""
    else:
        if not class_file.is_file():
            raise InputError(f"{path}: no classInd.txt beside it; pass classes=")
        names, class_bytes = read_classes(class_file, one_based_index=True), class_file.read_bytes()
    hasher = hashlib.sha256()
    lines = read_lines([path], hasher)[0]
    hasher.update(class_bytes)
    by_folder = {n.lower(): i for i, n in enumerate(names)}
    paths, wheres, labels = [], [], []
    for lineno, ln in lines:
        where = f"{path}:{lineno}"
        check_path(ln.split()[0], where, root)
        paths.append(ln.split()[0])
        wheres.append(where)
        labels.append(_ucf_label(ln, where, names, by_folder))
    nonempty(paths, path)
    check_unique(paths, wheres)
    return VideoList(tuple(paths), np.array(labels, np.int32), names, False,
                     f"ucf101:{path.resolve()}", hasher.hexdigest())


def _ucf_label(ln: str, where: str, names, by_folder) -> int:
    """0-based label of one UCF101 line; a given 1-based label must agree with the folder."""
    parts = ln.split()
    if len(parts) > 2:
        raise InputError(f"{where}: expected 'path [label]', got {ln!r}")
    from_path = _ucf_class_of_path(parts[0], by_folder)
    if len(parts) == 1:
        if from_path is None:
            raise InputError(f"{where}: no label, and no known class in path {parts[0]!r}")
        return from_path
    lab = parse_int(parts[1], where)
    if not 1 <= lab <= len(names):
        raise InputError(f"{where}: label {lab} out of range [1, {len(names)}] (UCF101 labels are 1-based)")
    if from_path is not None and from_path != lab - 1:
        raise InputError(f"{where}: label {lab} ({names[lab - 1]}) disagrees with the class "
                         f"folder of {parts[0]!r} ({names[from_path]})")
    return lab - 1


def _ucf_class_of_path(p: str, by_folder: dict[str, int]) -> int | None:
    """Class index from ``Class/v_Class_gNN_cNN.avi``; folder first, else the file name.

    Matching is case-insensitive because the distributed file names spell
    ``v_HandStandPushups_*`` while the class (and folder) is ``HandstandPushups``.
    """
    parts = p.replace("\\", "/").split("/")
    if len(parts) > 1:
        return by_folder.get(parts[-2].lower())
    m = re.match(r"v_(.+)_g\d+_c\d+", parts[-1])
    return by_folder.get(m.group(1).lower()) if m else None


# ----------------------------------------------------------------------------- HMDB51

def read_hmdb51_split(directory, *, split: int = 1, subset: str = "train", classes=None,
                      root=None, require_exist: bool = True) -> VideoList:
    """Gather the ``<class>_test_split<split>.txt`` files of ``directory``.

    Lines are ``name 0|1|2`` (0 unused, 1 train, 2 test); the videos whose flag matches
    ``subset`` are kept, in class then file order, as ``<class>/<name>``. Classes default
    to the sorted class names of the split's files (51 for HMDB51); HMDB51 has no official
    index order (CoViAR/DMC-Net scores use another), so ``classes`` (names or a file of
    them, covering exactly the split's classes) may fix it. ``sha256`` hashes the split's
    files in sorted file-name order. ``root`` and ``require_exist`` as in :func:`read_list`.
    """
    directory = Path(directory)
    if subset not in HMDB_SUBSETS:
        raise InputError(f"subset must be one of {sorted(HMDB_SUBSETS)}, not {subset!r}")
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory of HMDB51 split files")
    files = sorted(p for p in directory.glob(f"*_test_split{split}.txt")
                   if (m := HMDB_FILE.match(p.name)) and int(m.group("k")) == split)
    if not files:
        raise InputError(f"{directory}: no *_test_split{split}.txt files")
    found = [HMDB_FILE.match(f.name).group("cls") for f in files]
    names = read_classes(classes) or tuple(sorted(found))  # by name, not by file name
    if set(names) != set(found):
        raise InputError(f"{directory}: classes given {sorted(set(names) ^ set(found))} do not "
                         f"match the split files")
    hasher = hashlib.sha256()
    want = HMDB_SUBSETS[subset]
    lines_of = dict(zip(found, read_lines(files, hasher)))
    paths, wheres, labels = [], [], []
    for label, cls in enumerate(names):
        f = directory / f"{cls}_test_split{split}.txt"
        for lineno, ln in lines_of[cls]:
            name, flag = _hmdb_line(ln, f"{f}:{lineno}")
            check_path(f"{cls}/{name}", f"{f}:{lineno}", root)
            if flag == want:
                paths.append(f"{cls}/{name}")
                wheres.append(f"{f}:{lineno}")
                labels.append(label)
    nonempty(paths, f"{directory} split {split} {subset}")
    check_unique(paths, wheres)
    vl = VideoList(tuple(paths), np.array(labels, np.int32), names, False,
                   f"hmdb51:{directory.resolve()}:split{split}:{subset}", hasher.hexdigest())
    if root is not None and require_exist:
        check_exist(vl.paths, Path(root))
    return vl


def _hmdb_line(ln: str, where: str) -> tuple[str, int]:
    parts = ln.split()
    if len(parts) != 2:
        raise InputError(f"{where}: expected 'name 0|1|2', got {ln!r}")
    flag = parse_int(parts[1], where, "split flag")
    if flag not in (0, 1, 2):
        raise InputError(f"{where}: split flag {flag} is not 0 (unused), 1 (train) or 2 (test)")
    return parts[0], flag


# ----------------------------------------------------------------------------- class folders

@register_format("folder")
def _read_folder(path: Path, *, classes=None, root=None) -> VideoList:
    """``path/<class>/**/<video>``: classes sorted (or as ``classes`` orders them)."""
    if not path.is_dir():
        raise InputError(f"{path}: not a directory of class folders")
    base = Path(root) if root is not None else path
    try:
        prefix = path.resolve().relative_to(base.resolve())
    except ValueError:
        raise InputError(f"folder {path} is not inside root {base}") from None
    folders = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = read_classes(classes) or tuple(folders)
    unknown = sorted(set(folders) - set(names))
    if unknown:
        raise InputError(f"{path}: class folders {unknown} are not among the given classes")
    paths, labels = [], []
    for label, name in enumerate(names):
        vids = sorted(p for p in (path / name).rglob("*")
                      if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()) if (path / name).is_dir() else []
        if not vids:
            log.warning("%s: class %r has no videos", path, name)
        paths += [(prefix / p.relative_to(path)).as_posix() for p in vids]
        labels += [label] * len(vids)
    nonempty(paths, path)
    # no list file: hash the canonical listing, which is what a file written from it would hold
    listing = "".join(f"{p} {lab}\n" for p, lab in zip(paths, labels)) + "".join(n + "\n" for n in names)
    return VideoList(tuple(paths), np.array(labels, np.int32), names, False,
                     f"folder:{path.resolve()}", hashlib.sha256(listing.encode()).hexdigest())
