"""``framesel export``: a store's per-video features as files other tools read.

- ``npy`` (default): ``DIR/<name>_<key>.npy`` per done video and stream, v-iashin/video_features'
  naming; ``<name>`` is the list path without its extension (``videos/fight/fi005``, folders
  made) or, with ``names="stem"``, its stem (refused when two videos share one); ``<key>`` is
  the stream's key in an imported store's source, else the stream's name. An imported store
  is written back the way its files were found (stem or path, with or without the key), so
  ``import`` then ``export`` gives the source's files again, bit for bit for a float16 source.
- ``npz``: ``DIR/<name>.npz`` per done video: one array per stream (its key) and
  ``frame_index`` (T,) int32.

Arrays are float16 as stored: (T, D) when the stream has one crop (unless an imported
source was N x 1 x D), else (T, K, D). ``DIR/framesel_export.json`` records the store's
identity and attrs, the classes, and per video its path, label, files and ``frame_index``;
videos not done are listed as skipped. A head that ``framesel head`` trained is written as
``DIR/heads/<stream>.safetensors`` (its weights; its provenance as JSON in the metadata and
beside it as ``<stream>.json``).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from data.errors import InputError
from data.progress import show_progress
from data.store import DONE, open_store

FORMATS = ("npy", "npz")


@dataclass
class ExportSummary:
    out: str
    written: int = 0
    skipped: list[str] = field(default_factory=list)
    files: int = 0
    heads: list[str] = field(default_factory=list)

    def text(self) -> str:
        heads = f"; heads: {', '.join(self.heads)}" if self.heads else ""
        return (f"{self.out}: {self.written} videos ({self.files} files) exported, {len(self.skipped)} not done "
                f"skipped{heads}")


def export_store(store_path, out_dir, *, fmt: str = "npy", names: str | None = None,
                 quiet: bool = False) -> ExportSummary:
    """Write the done videos of ``store_path`` under ``out_dir`` (module docstring)."""
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out_dir)
    with open_store(store_path) as store:
        plan = _plan(store, names)
        out.mkdir(parents=True, exist_ok=True)
        summary, status, paths, labels = ExportSummary(str(out)), store.status(), store.paths, store.labels
        videos = []
        for i in tqdm(range(store.num_videos), unit="video", desc="export", disable=not show_progress(quiet)):
            if status[i] != DONE:
                summary.skipped.append(paths[i])
                continue
            files = _write_video(store, i, out, plan, fmt)
            summary.written, summary.files = summary.written + 1, summary.files + len(files)
            videos.append({"path": paths[i], "label": np.asarray(labels[i]).tolist(), "files": files,
                           "num_frames": int(store.read("videos/num_frames", i)),
                           "frame_index": store.read("frame_index", i).tolist()})
        summary.heads = _write_heads(store, out)
        manifest = {"store": store.identity(), "format": fmt, "classes": store.attrs.get("classes"),
                    "streams": {s: {"key": k, "shape": _row_shape(store, s, plan)} for s, k in plan["keys"].items()},
                    "attrs": {k: store.attrs.get(k) for k in ("T", "crops", "backbone", "import", "settings")},
                    "videos": videos, "skipped": summary.skipped}
    (out / "framesel_export.json").write_text(json.dumps(manifest, indent=1, default=str))
    return summary


def _plan(store, names: str | None) -> dict:
    """How files are named: per stream its key, whether suffixed, and 2-D or 3-D arrays."""
    imported = store.attrs.get("import") or {}
    naming = imported.get("naming") or {}
    keys = {s: (imported.get("streams") or {}).get(s, s) for s in store.streams}
    found = {n.get("names") for n in naming.values()} - {None}
    names = names or (found.pop() if len(found) == 1 else "path")
    if names not in ("path", "stem"):
        raise InputError(f"--names must be path or stem, got {names!r}")
    if names == "stem":
        stems = Counter(PurePosixPath(p).stem for p in store.paths)
        twice = [s for s, n in stems.items() if n > 1]
        if twice:
            raise InputError(f"--names stem: {len(twice)} stems name several videos (e.g. {twice[0]}); use --names path")
    single = len(store.streams) == 1
    return {"names": names, "keys": keys,
            "suffixed": {s: not (single and naming.get(s, {}).get("suffixed") is False) for s in store.streams},
            "ndim": {s: int(naming.get(s, {}).get("ndim", 0)) for s in store.streams}}


def _name(path: str, names: str) -> str:
    p = PurePosixPath(str(path).replace("\\", "/"))
    return p.stem if names == "stem" else str(p.with_suffix(""))


def _row_shape(store, stream: str, plan: dict) -> list[int]:
    T, K, D = store.shape(f"{stream}/features")[1:]
    return [T, D] if K == 1 and plan["ndim"][stream] != 3 else [T, K, D]


def _write_video(store, i: int, out: Path, plan: dict, fmt: str) -> list[str]:
    name = _name(store.paths[i], plan["names"])
    arrays = {}
    for stream, key in plan["keys"].items():
        feats = store.read(f"{stream}/features", i)              # (T, K, D) float16
        arrays[stream] = feats.reshape(_row_shape(store, stream, plan))
    if fmt == "npz":
        target = out / f"{name}.npz"
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, frame_index=store.read("frame_index", i),
                 **{plan["keys"][s]: a for s, a in arrays.items()})
        return [str(target.relative_to(out))]
    files = []
    for stream, array in arrays.items():
        suffix = f"_{plan['keys'][stream]}" if plan["suffixed"][stream] else ""
        target = out / f"{name}{suffix}.npy"
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, array)
        files.append(str(target.relative_to(out)))
    return files


def _write_heads(store, out: Path) -> list[str]:
    """Each head ``framesel head`` trained, as safetensors + JSON; the streams written."""
    import torch

    from data.torchfile import save_safetensors

    written, provenance = [], store.logits_provenance()
    for stream in store.streams:
        params = [n for n in store.array_names() if n.startswith(f"heads/{stream}/")]
        if not params:
            continue
        tensors = {n.split("/", 2)[2]: torch.from_numpy(store.read_array(n)) for n in params}
        prov = json.dumps(provenance.get(stream, {}), sort_keys=True, default=str)
        (out / "heads").mkdir(exist_ok=True)
        save_safetensors(tensors, out / "heads" / f"{stream}.safetensors", metadata={"framesel_head": prov})
        (out / "heads" / f"{stream}.json").write_text(prov)
        written.append(stream)
    return written
