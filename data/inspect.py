"""``framesel info`` and ``framesel check``: what a store holds, and whether it is sound."""
from __future__ import annotations

from collections import Counter

import numpy as np

from data.errors import SchemaError, StoreError
from data.store import DONE, FAILED, PENDING, Store, per_video_arrays


def summarize(store: Store) -> dict:
    """A JSON-ready summary: counts, streams and shapes, settings, versions, failures. A
    damaged node does not stop it: what cannot be read is listed under ``broken``."""
    a = store.attrs
    broken = [f"{meta}: unreadable metadata ({cause})" for meta, cause in store.broken_nodes().items()]

    def attempt(fn, default):
        try:
            return fn()
        except StoreError as err:
            broken.append(str(err))
            return default

    status = attempt(store.status, None)
    errors, paths = attempt(store.errors, None), attempt(lambda: store.paths, None)
    failures = ([(p, errors[i]) for i, p in enumerate(paths) if status[i] == FAILED]
                if status is not None and errors is not None and paths is not None else [])
    arrays = {}
    for n in store.array_names():
        if not n.startswith("videos/"):
            shape = attempt(lambda n=n: list(store.shape(n)), None)
            if shape is not None:
                arrays[n] = shape
    count = (lambda v: None) if status is None else (lambda v: int((status == v).sum()))
    return {
        "path": str(store.path), "format": store.format, "schema_version": a.get("schema_version"),
        "videos": None if status is None else int(len(status)), "done": count(DONE),
        "failed": count(FAILED), "pending": count(PENDING),
        "classes": len(a.get("classes", [])), "multilabel": a.get("multilabel"),
        "T": a.get("T"), "flow_stack": a.get("flow_stack"), "crops": a.get("crops"),
        "frame_size": a.get("frame_size"), "streams": store.streams, "arrays": arrays,
        "backbone": {s: {k: d.get(k) for k in ("name", "sha256", "gflops_per_frame", "num_classes", "logits_stored",
                                                "layout", "preset")}
                     for s, d in a.get("backbone", {}).items()},
        "flow": (a.get("flow") or {}).get("algorithm"), "settings": a.get("settings", {}),
        "cost": attempt(lambda: cost_summary(store, status), None) if status is not None else None,
        "logits_provenance": attempt(store.logits_provenance, {}),
        "versions": a.get("versions", {}), "created": a.get("created"), "command": a.get("command"),
        "failures": failures, "broken": broken,
    }


def cost_summary(store: Store, status: np.ndarray) -> dict | None:
    """Mean over the done videos of the measured seconds per stage and of the flow's GFLOPs
    and iterations per video (with what the GFLOPs are: counted, estimated, upper bound);
    None for a store without ``cost/*`` (made before it was recorded)."""
    stages = store.attrs.get("cost_stages")
    if not stages or not store.has("cost/seconds"):
        return None
    done = np.flatnonzero(status == DONE)
    kind = ((store.attrs.get("cost") or {}).get("flow_gflops") or {}).get("kind")
    out = {"videos": int(len(done)), "seconds": dict.fromkeys(stages), "flow_gflops": None, "flow_kind": kind}
    if len(done):
        out["seconds"] = dict(zip(stages, np.mean(store.read_rows("cost/seconds", done), axis=0).tolist()))
        out["flow_gflops"] = float(np.mean(store.read_rows("cost/flow_gflops", done)))
    return out


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
                     + ("" if b.get("logits_stored") else " (its logits are not stored)")
                     + (f", {b['layout']} layout, preset {b['preset']['name']}" if b.get("preset") else ""))
    for name, shape in sorted(info["arrays"].items()):
        lines.append(f"  {name:24s} {tuple(shape)}")
    cost = info.get("cost")
    if cost and cost["videos"]:
        per = ", ".join(f"{n} {v:.3g}" for n, v in cost["seconds"].items())
        lines.append(f"measured seconds per video (mean of {cost['videos']} done): {per}; "
                     f"flow {cost['flow_gflops']:.4g} GFLOPs per video ({cost['flow_kind']})")
    elif "cost" in info and cost is None:
        lines.append("cost per video: not recorded (a store made before seconds and flow GFLOPs were recorded)")
    for stream, prov in info["logits_provenance"].items():
        lines.append(f"logits of {stream}: {prov.get('by', '?')} ({prov.get('created', '')})")
    lines.append(f"created {info['created']} by: {info['command']}")
    if info["failures"]:
        lines.append("failed videos:")
        lines += [f"  {p}: {e}" for p, e in info["failures"][:max_failures]]
        if len(info["failures"]) > max_failures:
            lines.append(f"  … and {len(info['failures']) - max_failures} more")
    if info.get("broken"):
        lines.append("BROKEN (run `framesel check` for every problem):")
        lines += [f"  {b}" for b in info["broken"]]
    return "\n".join(lines)


def check_store(store: Store) -> list[str]:
    """Problems found (empty = sound): schema, unreadable metadata, shapes, statuses, paths,
    and for every done row of every per-video array: its chunk exists and decodes, floats are
    finite, and logits were written for it. A damaged node is reported and checking goes on."""
    try:
        store.check_schema()
    except SchemaError as err:   # reported, not raised
        return [str(err)]
    problems = [f"{meta}: unreadable metadata ({cause})" for meta, cause in store.broken_nodes().items()]
    try:
        layout = store.layout()
        status, errors = store.status(), store.errors()
    except StoreError as err:
        return problems + [str(err)]
    V = store.num_videos
    expected = per_video_arrays(layout)
    for s in store.streams:          # logits `head` added: checked like the rest, any C
        if f"{s}/logits" not in expected and store.has(f"{s}/logits"):
            expected[f"{s}/logits"] = None
    arrays = []
    for name, spec in expected.items():
        if not store.has(name):
            problems.append(f"missing array {name}")
            continue
        try:
            shape = store.shape(name)
        except StoreError as err:
            problems.append(str(err))
            continue
        if spec is not None and shape != (V, *spec[0]):
            problems.append(f"{name}: shape {shape}, expected {(V, *spec[0])}")
        else:
            arrays.append(name)       # a missing or damaged array is reported; the rest checked
    if not set(np.unique(status)) <= {PENDING, DONE, FAILED}:
        problems.append(f"videos/status holds values other than 0/1/2: {sorted(set(np.unique(status)))}")
    problems += _check_paths(layout.paths)
    without = {}
    for s in store.streams:
        if f"{s}/logits" in arrays:
            without[f"{s}/logits"] = set((np.flatnonzero((status == DONE) & ~store.logits_written(s))).tolist())
            if without[f"{s}/logits"]:
                problems.append(_no_logits(store, s, sorted(without[f"{s}/logits"])))
    for i in np.flatnonzero(status == DONE):
        names = [n for n in arrays if int(i) not in without.get(n, ())]
        problems += _check_video(store, int(i), names, errors[i])
    for i in np.flatnonzero(status == FAILED):
        if not errors[i]:
            problems.append(f"video {i} ({layout.paths[i]}) failed without an error message")
    return problems


def _check_paths(paths) -> list[str]:
    out = [f"video {i}: empty path in videos/path" for i, p in enumerate(paths) if not str(p).strip()]
    dup = {p: n for p, n in Counter(paths).items() if n > 1 and str(p).strip()}
    out += [f"videos/path lists {p!r} {n} times" for p, n in sorted(dup.items())]
    return out


def _no_logits(store, stream, rows) -> str:
    paths = store.paths
    return (f"{len(rows)} done videos have no {stream} logits (e.g. {', '.join(paths[i] for i in rows[:3])}): "
            f"they were extracted after `framesel head` ran; run `framesel head` again")


def _check_video(store, i, arrays, error) -> list[str]:
    """Problems of done video ``i``: every array's chunk exists and decodes, values are sane."""
    out, rows = [], {}
    for name in arrays:
        try:
            rows[name] = store.verified_row(name, i)
        except StoreError as err:
            out.append(str(err))
    if out:
        return out
    if "videos/num_frames" in rows and "frame_index" in rows:
        n, fi = int(rows["videos/num_frames"]), rows["frame_index"]
        if n < 1:
            out.append(f"video {i}: done with {n} decoded frames")
        if fi.min() < 0 or fi.max() >= max(n, 1):
            out.append(f"video {i}: frame_index outside [0, {n})")
    if error:
        out.append(f"video {i}: done but has an error message {error!r}")
    for name, x in rows.items():
        if (name.split("/")[-1] in ("features", "logits", "feature_maps") or name == "motion") \
                and not np.isfinite(x).all():
            out.append(f"video {i} ({store.paths[i]}): {name} holds NaN or inf")
        if name in ("cost/seconds", "cost/flow_gflops", "cost/flow_fields") and not (np.isfinite(x).all() and (x >= 0).all()):
            out.append(f"video {i} ({store.paths[i]}): {name} holds a negative or non-finite value")
    return out
