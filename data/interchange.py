"""``framesel import``: a store from precomputed per-frame features (data/feature_sources.py).

Researchers exchange per-frame features as a file per video (v-iashin/video_features writes
``<stem>_<key>.npy``, N x D) or one HDF5/safetensors file keyed by video. Importing one
gives a store of the usual contract (GUIDE §2) that ``check``, ``info``, ``head``, ``train``,
``evaluate`` and ``export`` read:

- ``<stream>/features`` (V, T, K, D) float16: the source's rows (N x D is K = 1), cast to
  float16 (a float16 source is kept bit for bit); no logits until ``framesel head``;
- ``videos/num_frames``: N, the video's rows in the source; ``frame_index`` (V, T): which
  rows were taken. With ``frames=T`` each video's T rows are TSN's segment centres over its
  N rows (data/segments.py); without it every video must have the same N, all kept (T = N);
- no ``motion`` (no flow was measured) and no thumbnails; ``videos/fps`` NaN (unknown);
- attrs: the source, its kind and sha256 (every byte read), the stream keys, the naming the
  files were found under (``export`` writes them back the same way), the source dtype; the
  backbone of each stream is ``imported:<key>`` with that sha256, its GFLOPs per frame only
  when given (``--gflops-per-frame``; else evaluate leaves compute uncounted).

A video whose file is missing, with fewer than T rows, another N (without ``frames``), another
crop count or feature size than the rest (the most common decides), or non-finite values, is
recorded as failed with the cause; the rest are imported.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from data import __version__
from data.errors import InputError, StoreError
from data.feature_sources import Location, open_source
from data.layout import Layout, StreamSpec, VideoResult
from data.lists import read_list
from data.progress import show_progress
from data.segments import segment_points
from data.store import create_store


@dataclass(frozen=True)
class ImportConfig:
    source: str
    list_path: str
    out: str
    classes_file: str | None = None
    list_format: str = "auto"
    frames: int | None = None                               # T rows per video (None: all, same N)
    streams: tuple[tuple[str, str], ...] = (("rgb", "rgb"),)  # (stream, key in the source)
    gflops: tuple[tuple[str, float], ...] = ()              # (stream, GFLOPs per frame of its backbone)
    format: str | None = None                               # zarr | hdf5 (default: from the suffix of out)
    quiet: bool = False
    command: str = ""


@dataclass
class ImportSummary:
    store: str
    total: int = 0
    done: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures and self.done == self.total

    def text(self) -> str:
        lines = [f"{self.store}: {self.done}/{self.total} imported, {len(self.failures)} failed "
                 f"({self.seconds:.1f} s; source sha256 {self.sha256[:12]})"]
        return "\n".join(lines + [f"  FAILED {p}: {e}" for p, e in self.failures])


def import_features(cfg: ImportConfig) -> ImportSummary:
    """Build the store ``cfg.out`` from ``cfg.source`` (module docstring)."""
    _check(cfg)
    videos = read_list(cfg.list_path, fmt=cfg.list_format, classes=cfg.classes_file, require_exist=False)
    t0 = time.perf_counter()
    with open_source(cfg.source, list(videos.paths)) as source:
        found, errors = _survey(source, videos.paths, cfg.streams)
        dims, N = _decide(found, errors, cfg)
        layout = _layout(cfg, videos, dims, N, source)
        summary = ImportSummary(store=str(cfg.out), total=len(videos.paths))
        store = create_store(cfg.out, layout, format=cfg.format)
        try:
            _write_all(store, source, videos.paths, found, errors, dims, cfg, summary)
            summary.sha256 = source.digest.hexdigest()
            _finish_attrs(store, summary.sha256, cfg)
        finally:
            store.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _check(cfg: ImportConfig) -> None:
    if cfg.frames is not None and (isinstance(cfg.frames, bool) or cfg.frames < 1):
        raise InputError(f"--frames must be a positive integer, got {cfg.frames!r}")
    names = [s for s, _ in cfg.streams]
    if not names or len(set(names)) != len(names):
        raise InputError(f"--streams must name each stream once, got {', '.join(names) or 'none'}")
    unknown = sorted({s for s, _ in cfg.gflops} - set(names))
    if unknown:
        raise InputError(f"--gflops-per-frame names streams not imported: {', '.join(unknown)}")
    if Path(cfg.out).exists():
        raise StoreError(f"--out {cfg.out} already exists; import writes a new store")


def _survey(source, paths, streams):
    """Per video {stream: (Location, shape)}, and per video the first cause it cannot be read."""
    single = len(streams) == 1
    found, errors = [], [""] * len(paths)
    for i, video in enumerate(paths):
        here = {}
        try:
            for stream, key in streams:
                loc = source.locate(video, key, single)
                shape = source.shape(loc)
                if len(shape) not in (2, 3) or 0 in shape:
                    raise InputError(f"{source.path / loc.where if source.kind == 'folder' else loc.where}: "
                                     f"shape {shape}, expected N x D or N x crops x D")
                here[stream] = (loc, shape)
        except InputError as err:
            errors[i] = str(err)
        found.append(here)
    return found, errors


def _decide(found, errors, cfg: ImportConfig):
    """Per stream (K, D, ndim) and the common N (None with ``frames``): the most common among
    the readable videos; the others fail with the cause."""
    ok = [i for i, e in enumerate(errors) if not e]
    if not ok:
        raise InputError(f"no video of {cfg.list_path} could be read from {cfg.source}: {errors[0]}")
    dims = {}
    for stream, _ in cfg.streams:
        dims[stream] = Counter((_kd(found[i][stream][1]), len(found[i][stream][1])) for i in ok).most_common(1)[0][0]
    for i in ok:
        for stream, ((K, D), _) in dims.items():
            k, d = _kd(found[i][stream][1])
            if (k, d) != (K, D):
                errors[i] = errors[i] or f"{stream}: {k} crops x {d} features, the others {K} x {D}"
        rows = {found[i][s][1][0] for s in dims}
        if len(rows) > 1:
            errors[i] = errors[i] or f"its streams have different row counts ({', '.join(map(str, sorted(rows)))})"
    counts = Counter(found[i][cfg.streams[0][0]][1][0] for i in ok if not errors[i])
    N = counts.most_common(1)[0][0] if counts else 0
    for i in ok:
        n = found[i][cfg.streams[0][0]][1][0]
        if errors[i]:
            continue
        if cfg.frames is not None and n < cfg.frames:
            errors[i] = f"{n} rows, fewer than --frames {cfg.frames}"
        elif cfg.frames is None and n != N:
            errors[i] = f"{n} rows, the others {N}: pass --frames T to take T of each video's rows"
    return dims, (None if cfg.frames is not None else N)


def _kd(shape) -> tuple[int, int]:
    return (1, shape[1]) if len(shape) == 2 else (shape[1], shape[2])


def _settings(cfg: ImportConfig) -> dict:
    return {"source": str(Path(cfg.source).resolve()), "frames": cfg.frames,
            "streams": [list(s) for s in cfg.streams], "gflops": [list(g) for g in cfg.gflops]}


def _layout(cfg: ImportConfig, videos, dims, N, source) -> Layout:
    T = cfg.frames or N
    specs = tuple(StreamSpec(stream, K, D, 0) for stream, ((K, D), _) in dims.items())
    gflops, keys = dict(cfg.gflops), dict(cfg.streams)
    backbone = {s: {"name": f"imported:{keys[s]}", "file": str(Path(cfg.source).resolve()), "sha256": None,
                    "source": f"imported from {cfg.source} ({source.kind})", "feature_dim": D, "num_classes": 0,
                    "logits_stored": False, "layout": "imported", "preset": None, "input_size": None,
                    "gflops_per_frame": gflops.get(s)} for s, ((K, D), _) in dims.items()}
    attrs = {"classes": list(videos.classes), "multilabel": bool(videos.multilabel), "crops": specs[0].crops,
             "flow_stack": None, "frame_size": None, "flow": None, "backbone": backbone,
             "sampling": {"rule": "TSN segment centres over each video's N rows" if cfg.frames else
                          "every row (all videos have the same N)"},
             "settings": _settings(cfg), "list": {"path": str(cfg.list_path), "format": cfg.list_format,
                                                  "source": videos.source}, "list_sha256": videos.sha256,
             "import": {"source": str(Path(cfg.source).resolve()), "kind": source.kind, "sha256": None,
                        "streams": keys, "frames": cfg.frames},
             "versions": {"framesel": __version__, "numpy": np.__version__, "python": platform.python_version()},
             "command": cfg.command or " ".join(sys.argv),
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return Layout(paths=tuple(videos.paths), labels=videos.labels, T=T, streams=specs, thumbnail_size=None,
                  attrs=attrs, motion=False)


def _write_all(store, source, paths, found, errors, dims, cfg, summary) -> None:
    from tqdm import tqdm

    naming, dtypes = {}, {}
    for i in tqdm(range(len(paths)), unit="video", desc="import", disable=not show_progress(cfg.quiet)):
        try:
            if errors[i]:
                raise InputError(errors[i])
            result = _video(source, found[i], dims, cfg.frames, naming, dtypes)
        except InputError as err:
            summary.failures.append((paths[i], str(err)))
            store.mark_failed(i, str(err))
            continue
        store.write_video(i, result, note=f"{result.num_frames} rows; {len(result.frame_index)} taken"
                          if cfg.frames else "")
        summary.done += 1
    store.set_attrs({"import": {**store.attrs["import"], "naming": naming, "source_dtype": dtypes}})


def _video(source, here: dict, dims, frames, naming, dtypes) -> VideoResult:
    """One video's rows, read, sampled and cast; InputError(cause) when unusable."""
    out, n = {}, None
    for stream, ((K, D), ndim) in dims.items():
        loc: Location = here[stream][0]
        rows = source.read(loc)
        if rows.dtype.kind != "f":
            raise InputError(f"{loc.where}: {rows.dtype} values, expected floats")
        n = len(rows)
        take = segment_points(n, frames) if frames else np.arange(n)
        feats = rows[take].reshape(len(take), K, D).astype(np.float16)
        if not np.isfinite(feats).all():
            raise InputError(f"{loc.where}: NaN, inf or values beyond float16's range (65504)")
        out[stream] = {"features": feats}
        naming.setdefault(stream, {"names": loc.naming, "suffixed": loc.suffixed, "ndim": ndim,
                                   "container": "npz" if loc.member else Path(loc.where).suffix.lstrip(".") or "key",
                                   "member": loc.member})
        dtypes.setdefault(stream, str(rows.dtype))
    return VideoResult(num_frames=n, fps=float("nan"), frame_index=take.astype(np.int32), motion=None,
                       streams=out, thumbnails=None)


def _finish_attrs(store, sha: str, cfg: ImportConfig) -> None:
    """The source's sha256 (known once every byte was read) into the identity: the import
    record, each stream's backbone, and the settings hash."""
    a = store.attrs
    settings = {**_settings(cfg), "source_sha256": sha}
    backbone = {s: {**d, "sha256": sha} for s, d in a["backbone"].items()}
    store.set_attrs({"import": {**a["import"], "sha256": sha}, "backbone": backbone, "settings": settings,
                     "config_sha256": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()})


def parse_streams(text: str) -> tuple[tuple[str, str], ...]:
    """``"rgb=clip,flow"`` -> (("rgb", "clip"), ("flow", "flow")): stream names and the key each
    is stored under in the source (the stream's own name when not given)."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if item:
            stream, _, key = item.partition("=")
            out.append((stream.strip(), (key or stream).strip()))
    return tuple(out)


