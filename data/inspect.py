"""``framesel info`` and ``framesel check``: what a store holds, and whether it is sound."""
from __future__ import annotations

import numpy as np

from data.errors import SchemaError
from data.store import DONE, FAILED, PENDING, Store, per_video_arrays


def summarize(store: Store) -> dict:
    """A JSON-ready summary: counts, streams and shapes, settings, versions, failures."""
    a = store.attrs
    status = store.status()
    errors = store.errors()
    failures = [(p, errors[i]) for i, p in enumerate(store.paths) if status[i] == FAILED]
    arrays = {n: list(store.shape(n)) for n in store.array_names() if not n.startswith("videos/")}
    settings = a.get("settings", {})
    return {
        "path": str(store.path), "format": store.format, "schema_version": a.get("schema_version"),
        "videos": int(len(status)), "done": int((status == DONE).sum()),
        "failed": int((status == FAILED).sum()), "pending": int((status == PENDING).sum()),
        "classes": len(a.get("classes", [])), "multilabel": a.get("multilabel"),
        "T": a.get("T"), "flow_stack": a.get("flow_stack"), "crops": a.get("crops"),
        "frame_size": a.get("frame_size"), "streams": store.streams, "arrays": arrays,
        "backbone": {s: {k: d.get(k) for k in ("name", "sha256", "gflops_per_frame", "num_classes", "logits_stored")}
                     for s, d in a.get("backbone", {}).items()},
        "flow": (a.get("flow") or {}).get("algorithm"), "settings": settings,
        "logits_provenance": a.get("logits_provenance", {}),
        "versions": a.get("versions", {}), "created": a.get("created"), "command": a.get("command"),
        "failures": failures,
    }


def format_summary(info: dict, *, max_failures: int = 20) -> str:
    lines = [f"{info['path']} ({info['format']}, schema {info['schema_version']})",
             f"videos: {info['videos']}  done {info['done']}  failed {info['failed']}  pending {info['pending']}",
             f"T={info['T']} positions, L={info['flow_stack']} flow pairs, K={info['crops']} crops, "
             f"frames {info['frame_size']}, {info['classes']} classes"
             + (" (multi-label)" if info["multilabel"] else ""),
             f"flow: {info['flow']}"]
    for stream, b in info["backbone"].items():
        lines.append(f"stream {stream}: {b['name']} sha256 {str(b['sha256'])[:12]}… "
                     f"{b['gflops_per_frame']:.3f} GFLOPs/frame, head {b['num_classes']} classes"
                     + ("" if b.get("logits_stored") else " (its logits are not stored)"))
    for name, shape in sorted(info["arrays"].items()):
        lines.append(f"  {name:24s} {tuple(shape)}")
    for stream, prov in info["logits_provenance"].items():
        lines.append(f"logits of {stream}: {prov.get('by', '?')} ({prov.get('created', '')})")
    lines.append(f"created {info['created']} by: {info['command']}")
    if info["failures"]:
        lines.append("failed videos:")
        lines += [f"  {p}: {e}" for p, e in info["failures"][:max_failures]]
        if len(info["failures"]) > max_failures:
            lines.append(f"  … and {len(info['failures']) - max_failures} more")
    return "\n".join(lines)


def check_store(store: Store) -> list[str]:
    """Problems found (empty = sound): schema, shapes, statuses, counts, NaN/inf in done rows."""
    problems = []
    a = store.attrs
    try:
        store.check_schema()
    except SchemaError as err:   # reported, not raised
        return [str(err)]
    layout = store.layout()
    V = store.num_videos
    for name, (row, dtype) in per_video_arrays(layout).items():
        if not store.has(name):
            problems.append(f"missing array {name}")
        elif store.shape(name) != (V, *row):
            problems.append(f"{name}: shape {store.shape(name)}, expected {(V, *row)}")
    if problems:
        return problems
    status, errors = store.status(), store.errors()
    if not set(np.unique(status)) <= {PENDING, DONE, FAILED}:
        problems.append(f"videos/status holds values other than 0/1/2: {sorted(set(np.unique(status)))}")
    float_arrays = [n for n in store.array_names() if n.split("/")[-1] in ("features", "logits", "feature_maps")
                    or n == "motion"]
    for i in np.flatnonzero(status == DONE):
        problems += _check_video(store, int(i), float_arrays, errors[i], a)
    for i in np.flatnonzero(status == FAILED):
        if not errors[i]:
            problems.append(f"video {i} ({store.paths[i]}) failed without an error message")
    return problems


def _check_video(store, i, float_arrays, error, attrs) -> list[str]:
    out = []
    n = int(store.read("videos/num_frames", i))
    fi = store.read("frame_index", i)
    if n < 1:
        out.append(f"video {i}: done with {n} decoded frames")
    if fi.min() < 0 or fi.max() >= max(n, 1):
        out.append(f"video {i}: frame_index outside [0, {n})")
    if error:
        out.append(f"video {i}: done but has an error message {error!r}")
    for name in float_arrays:
        x = store.read(name, i)
        if not np.isfinite(x).all():
            out.append(f"video {i} ({store.paths[i]}): {name} holds NaN or inf")
    return out
