"""Precomputed per-frame features as other tools write them: what ``framesel import`` reads.

A source holds, per video of a list and per stream key, an array of N rows: N x D, or
N x K x D (K crops). Where a video's rows are is found from its list path ``p``, with the
name ``p`` without its extension (``videos/fight/fi005``) tried first and its stem
(``fi005``) next, when the list's stems are unique:

==================  ==========================================================================
source              where the rows of video ``name``, stream key ``key`` are
==================  ==========================================================================
folder of ``.npy``  ``name_key.npy`` (v-iashin/video_features' ``<stem>_<key>.npy``), or
                    ``name.npy`` when one stream is imported
folder of ``.npz``  ``name.npz``, its array ``key`` (its only array when one stream is imported)
``.h5``/``.hdf5``   dataset ``name/key`` (a group per video), or ``name`` for one stream; the
                    list path with its extension is tried too
``.safetensors``    tensor ``name/key``, or ``name`` for one stream
==================  ==========================================================================

Files are read as data: ``np.load(allow_pickle=False)`` (an object array is refused), h5py,
safetensors. Every byte read is hashed into one sha256 of the source (file names or keys in
list order with their bytes' sha256), recorded in the store.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from data.errors import InputError


@dataclass(frozen=True)
class Location:
    """Where one video's rows of one stream are: a file (and an array in it) or a key."""

    where: str                 # file path relative to the source, or the key in it
    member: str | None = None  # npz array / None
    naming: str = "path"       # path | stem: which of the video's names found it
    suffixed: bool = True      # whether the name carried ``_key`` (npy) / ``/key`` (keyed files)


def video_names(path: str, stems_unique: bool) -> list[tuple[str, str]]:
    """[(name, naming)] to try for list path ``path``: without its extension, then its stem."""
    p = PurePosixPath(str(path).replace("\\", "/"))
    names = [(str(p.with_suffix("")), "path")]
    if stems_unique and p.stem != names[0][0]:
        names.append((p.stem, "stem"))
    return names


class Source:
    """Base of the readers: ``locate`` a video's rows, read their ``shape`` cheaply, ``read``
    them (hashing what is read)."""

    kind = ""

    def __init__(self, path: Path, paths: list[str]):
        self.path, self.digest = Path(path), hashlib.sha256()
        stems = [PurePosixPath(str(p)).stem for p in paths]
        self.stems_unique = len(set(stems)) == len(stems)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass

    def locate(self, video: str, key: str, single: bool) -> Location:
        raise NotImplementedError

    def shape(self, loc: Location) -> tuple[int, ...]:
        raise NotImplementedError

    def read(self, loc: Location) -> np.ndarray:
        raise NotImplementedError

    def _hash(self, name: str, data: bytes) -> None:
        self.digest.update(f"{name}\0{hashlib.sha256(data).hexdigest()}\n".encode())


class FolderSource(Source):
    """A folder of ``.npy`` (one file per video and stream) or ``.npz`` (one per video) files."""

    kind = "folder"

    def locate(self, video, key, single):
        for name, naming in video_names(video, self.stems_unique):
            for suffix, suffixed in [(f"_{key}", True)] + ([("", False)] if single else []):
                if (self.path / f"{name}{suffix}.npy").is_file():
                    return Location(f"{name}{suffix}.npy", None, naming, suffixed)
            if (self.path / f"{name}.npz").is_file():
                members = self._members(f"{name}.npz")
                if key in members:
                    return Location(f"{name}.npz", key, naming)
                if single and len(members) == 1:
                    return Location(f"{name}.npz", members[0], naming, False)
                raise InputError(f"{self.path / name}.npz has no array {key!r} (it has {', '.join(members)})")
        tried = " or ".join(f"{n}_{key}.npy" + (f", {n}.npy" if single else "") + f", {n}.npz"
                            for n, _ in video_names(video, self.stems_unique))
        raise InputError(f"no features for {video} in {self.path} (looked for {tried})")

    def _members(self, name: str) -> list[str]:
        with np.load(self.path / name, allow_pickle=False) as npz:
            return list(npz.files)

    def shape(self, loc):
        try:
            if loc.member is None:
                return tuple(np.load(self.path / loc.where, mmap_mode="r", allow_pickle=False).shape)
            with np.load(self.path / loc.where, allow_pickle=False) as npz:
                return tuple(npz[loc.member].shape)
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{self.path / loc.where}: not a readable numpy file ({err})") from None

    def read(self, loc):
        data = (self.path / loc.where).read_bytes()
        self._hash(loc.where + (f":{loc.member}" if loc.member else ""), data)
        try:
            if loc.member is None:
                return np.load(io.BytesIO(data), allow_pickle=False)
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return npz[loc.member]
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{self.path / loc.where}: not a readable numpy file ({err})") from None


class KeyedSource(Source):
    """One file keyed by video: HDF5 (a dataset per video, or a group of one per stream) or
    safetensors (a tensor per video and stream)."""

    def __init__(self, path, paths):
        super().__init__(path, paths)
        self.kind = "safetensors" if self.path.suffix == ".safetensors" else "hdf5"
        from safetensors import SafetensorError

        try:
            if self.kind == "hdf5":
                import h5py
                self.file, self.keys = h5py.File(self.path, "r"), None
            else:
                from safetensors import safe_open
                self.file = safe_open(str(self.path), framework="pt")
                self.keys = set(self.file.keys())
        except (OSError, ValueError, SafetensorError) as err:
            raise InputError(f"{self.path}: not a readable {self.kind} file ({err})") from None

    def close(self):
        if self.kind == "hdf5":
            self.file.close()

    def _has(self, key: str) -> bool:
        if self.kind == "safetensors":
            return key in self.keys
        obj = self.file.get(key)
        return obj is not None and hasattr(obj, "shape")

    def locate(self, video, key, single):
        names = video_names(video, self.stems_unique)
        names.insert(1, (str(video), "path"))
        for name, naming in names:
            if self._has(f"{name}/{key}"):
                return Location(f"{name}/{key}", None, naming)
            if single and self._has(name):
                return Location(name, None, naming, False)
        tried = ", ".join(f"{n}/{key}" + (f" or {n}" if single else "") for n, _ in names)
        raise InputError(f"no features for {video} in {self.path} (looked for {tried})")

    def shape(self, loc):
        if self.kind == "safetensors":
            return tuple(self.file.get_slice(loc.where).get_shape())
        return tuple(self.file[loc.where].shape)

    def read(self, loc):
        if self.kind == "safetensors":
            tensor = self.file.get_tensor(loc.where)
            array = (tensor.float() if tensor.dtype == torch_bfloat16() else tensor).numpy()
        else:
            array = np.asarray(self.file[loc.where][()])
        self._hash(loc.where, array.tobytes())
        return array


def torch_bfloat16():
    """torch.bfloat16 (numpy has no bfloat16: such tensors are read as float32)."""
    import torch
    return torch.bfloat16


def open_source(path, paths: list[str]) -> Source:
    """The reader for ``path``: a folder, an ``.h5``/``.hdf5`` file or a ``.safetensors`` file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"feature source {path} does not exist")
    if path.is_dir():
        return FolderSource(path, paths)
    if path.suffix.lower() in (".h5", ".hdf5", ".safetensors"):
        return KeyedSource(path, paths)
    raise InputError(f"feature source {path}: expected a folder of .npy/.npz files, an .h5/.hdf5 file or a "
                     ".safetensors file")
