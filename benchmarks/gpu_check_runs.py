"""The steps of ``benchmarks/gpu_check.py`` that drive the ``framesel`` CLI as a user would.

- ``extract``: ``framesel extract --device D`` end to end over the carried clips (GPU: all
  of them at the defaults, i.e. the TSN protocol, T = 25, L = 5, 10 crops, OpenCV's TV-L1
  parameters, ``--flow auto`` -> tvl1-torch, 4 decode workers), with seconds per stage (the
  store's ``cost/seconds``), the device-busy fraction and a UCF101 projection; then the same
  small setting twice, on the device and on the CPU (``--flow-param device=cpu``), and the two
  stores compared. On a GPU they agree within :data:`REL_TOL` (relative L2 of each float
  array: tvl1-torch's float order differs between devices, ~1e-3 px, tests/test_flow_torch.py);
  ``--cpu`` compares the device pipeline (``--workers 2 --pipeline``) with the sequential
  path, which must be EQUAL array for array (benchmarks/README.md).
- ``train``: a planted store of UCF101 split 1's size (9,537 videos x 25 x 1 crop x 1280,
  101 classes; ``agents.synthetic.planted_states``) written there, then one ``framesel train
  --agent as`` epoch on the device and on the CPU with 2 threads and with all, each over a
  slice of the list (per-video updates: s/video is what an epoch is made of), extrapolated to
  the whole list.
- ``predict``: ``framesel predict --device D`` on the carried clips, skipped while the command
  does not exist (it is being built on another branch).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REL_TOL = 0.01            # GPU vs CPU store: each float array's relative L2 difference
UCF101_VIDEOS = 13320
TSN_PAIRS = 125           # distinct flow fields of a TSN-protocol video of >= 126 frames (25 x 5)


def framesel(*args, env=None, timeout=None) -> subprocess.CompletedProcess:
    """``framesel ARGS``, output captured: the script beside this Python (a venv), else the one
    gpu_check.sh installed (``GPU_CHECK_FRAMESEL``), else this Python's pipeline.cli (never
    another environment's framesel found on the PATH)."""
    found = [p for p in (Path(sys.executable).parent / "framesel", Path(os.environ.get("GPU_CHECK_FRAMESEL", "/-")))
             if p.is_file()]
    cmd = [str(found[0])] if found else [sys.executable, "-c", "from pipeline.cli import main; main()"]
    full_env = {**os.environ, **(env or {})}
    r = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout)
    print(f"$ framesel {' '.join(map(str, args))}\n{r.stdout[-1500:]}{r.stderr[-1500:]}", flush=True)
    return r


def _lines(clips: Path, n: int, out: Path) -> Path:
    out.write_text("".join((clips / "list.txt").read_text().splitlines(keepends=True)[:n]))
    return out


# ----------------------------------------------------------------------------- extract


def _summary(text: str) -> dict:
    m = re.search(r"\((\d+) processed in ([\d.]+) s, [\d.]+ videos/s(?:, device busy (\d+) %)?\)", text)
    if not m:
        raise RuntimeError(f"no extract summary in: {text[-300:]}")
    return {"processed": int(m.group(1)), "seconds": float(m.group(2)),
            "device_busy": None if m.group(3) is None else int(m.group(3)) / 100}


def _stages(path: Path) -> dict:
    """Mean seconds per stage per video and mean flow fields per video, from the store."""
    from data.store import open_store

    with open_store(path) as s:
        done = s.done()
        out = {"videos_done": int(len(done))}
        names = s.attrs.get("cost_stages") or []
        if names and s.has("cost/seconds"):
            sec = s.read_rows("cost/seconds", done)
            out["stage_seconds_per_video"] = {n: float(sec[:, i].mean()) for i, n in enumerate(names)}
        if s.has("cost/flow_fields"):
            out["flow_fields_per_video"] = float(s.read_rows("cost/flow_fields", done).mean())
    return out


def _project(e2e: dict) -> float | None:
    """UCF101 hours at the TSN protocol: s/video with the flow share scaled from this clip's
    distinct fields to a full video's 125."""
    st, fields = e2e.get("stage_seconds_per_video"), e2e.get("flow_fields_per_video")
    if not st or not fields or not e2e["processed"]:
        return None
    per_video = e2e["seconds"] / e2e["processed"]
    flow_frac = sum(v for k, v in st.items() if k.startswith("flow")) / max(sum(st.values()), 1e-9)
    return UCF101_VIDEOS * per_video * (1 + flow_frac * (TSN_PAIRS / fields - 1)) / 3600


def compare(a: Path, b: Path, exact: bool) -> dict:
    """Whether two stores are real (every video done, features not constant, same videos)
    and equal: array for array (``exact``) or each float array within REL_TOL."""
    from data.store import TIMING_NODES, compare_stores, open_store

    with open_store(a) as sa, open_store(b) as sb:
        done = sa.done()
        feats = [n for n in sa.array_names() if n.endswith("/features")]
        real = (len(done) == sa.num_videos == sb.num_videos == len(sb.done()) > 0 and sa.paths == sb.paths
                and bool(feats) and all(float(sa.read_rows(n, done).astype(np.float32).std()) > 0 for n in feats))
        diffs = compare_stores(sa, sb)
        rel = {}
        for n in sorted(set(sa.array_names()) - set(TIMING_NODES)):
            if sa.dtype(n).kind == "f" and sa.shape(n)[:1] == (sa.num_videos,):
                x, y = (s.read_rows(n, done).astype(np.float64) for s in (sa, sb))
                rel[n] = float(np.linalg.norm(np.nan_to_num(x - y)) / max(np.linalg.norm(np.nan_to_num(y)), 1e-12))
    other = [d for d in diffs if d.split(":")[0] not in rel]
    within = not other and all(v <= REL_TOL for v in rel.values())
    return {"real": real, "equal": not diffs if exact else within, "exact": exact, "identical": not diffs,
            "differences": diffs[:8], "relative_l2": rel, "tolerance": 0.0 if exact else REL_TOL}


# --cpu: one clip, 2 positions x 1 pair, 1 crop, one pyramid level, the seeded random
# backbone (the plumbing only): seconds on 2 cores
TINY = ["--backbone", "tiny_random", "--frames", "2", "--flow-stack", "1", "--crops", "1", "--flow", "tvl1-torch", "--flow-param", "nscales=1",
        "--flow-param", "warps=1", "--flow-param", "outer_iterations=2", "--flow-param", "epsilon=0.05"]
SMALL = ["--frames", "4", "--flow-stack", "2", "--crops", "1", "--flow", "tvl1-torch", "--flow-param", "nscales=3",
         "--flow-param", "warps=2", "--flow-param", "epsilon=0.05"]


def _extract(lst: Path, out: Path, *opts) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    r = framesel("extract", lst, "--out", out, *opts)
    if r.returncode != 0:
        raise RuntimeError(f"framesel extract {out.name} exited {r.returncode}: {(r.stderr or r.stdout)[-300:]}")
    return {**_summary(r.stdout + r.stderr), **_stages(out)}


def extract_step(args) -> dict:
    """GPU: the e2e run at the defaults, then SMALL on the device and on the CPU, compared
    within REL_TOL. --cpu: TINY sequentially (the e2e row) and through the device pipeline
    with 2 workers, compared exactly."""
    clips, work = args.data / "clips", args.work
    cls = ["--classes", clips / "classes.txt", "--root", clips, "--quiet"]
    if args.cpu:
        lst = _lines(clips, 1, work / "e2e.txt")
        e2e = _extract(lst, work / "e2e.zarr", "--device", "cpu", "--flow-param", "device=cpu", *TINY, *cls)
        _extract(lst, work / "cmp-device.zarr", "--device", "cpu", "--workers", "2", "--pipeline", *TINY, *cls)
        return {"e2e": {**e2e, "options": " ".join(TINY), "ucf101_tsn_hours": None},
                "compare": compare(work / "cmp-device.zarr", work / "e2e.zarr", exact=True)}
    e2e = _extract(clips / "list.txt", work / "e2e.zarr", "--device", args.device, "--workers", "4", *cls)
    e2e.update(options="defaults (TSN protocol), --workers 4", ucf101_tsn_hours=_project(e2e))
    lst = _lines(clips, 2, work / "cmp.txt")
    _extract(lst, work / "cmp-device.zarr", "--device", args.device, *SMALL, *cls)
    _extract(lst, work / "cmp-cpu.zarr", "--device", "cpu", "--flow-param", "device=cpu", *SMALL, *cls)
    return {"e2e": e2e, "compare": compare(work / "cmp-device.zarr", work / "cmp-cpu.zarr", exact=False)}


# ----------------------------------------------------------------------------- train


def planted_store(root: Path, V: int, D: int, C: int) -> tuple[Path, float]:
    """A real HDF5 store of V planted videos (T = 25, 1 crop, D features, C classes, planted
    logits) and its list; returns (store, seconds to write)."""
    from agents.synthetic import planted_states
    from data.layout import Layout, StreamSpec, VideoResult
    from data.store import create_store, open_store

    t, T = time.perf_counter(), 25
    st = planted_states(V=V, T=T, K=1, D=D, C=C, n_key=3, seed=0)
    paths = tuple(f"planted/v{i:05d}.mp4" for i in range(V))
    layout = Layout(paths=paths, labels=st.labels.numpy().astype(np.int32), T=T, streams=(StreamSpec("rgb", 1, D),),
                    attrs={"classes": [f"class{i}" for i in range(C)], "multilabel": False, "T": T, "crops": 1,
                           "flow_stack": 1, "config_sha256": "gpu-check-planted",
                           "backbone": {"rgb": {"name": "planted", "gflops_per_frame": 0.0}}})
    store = root / "planted.h5"
    store.unlink(missing_ok=True)
    with create_store(store, layout) as s:
        for i in range(V):
            s.write_video(i, VideoResult(num_frames=T, fps=25.0, frame_index=np.arange(T, dtype=np.int32),
                                         motion=st.motion[i].numpy(),
                                         streams={"rgb": {"features": st.features[i].numpy().astype(np.float16)}}))
    with open_store(store, "a") as s:
        s.add_logits("rgb", st.logits.numpy(), {"source": "agents.synthetic.planted_states", "seed": 0})
    return store, time.perf_counter() - t


def _epoch(store: Path, lst: Path, device: str, threads: int, out: Path) -> float:
    out.unlink(missing_ok=True)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    r = framesel("train", store, "--agent", "as", "--train", lst, "--out", out, "--seeds", "1", "--no-partner",
                 "--set", "epochs=1", "--device", device, "--quiet", env=env)
    m = re.search(r"seconds ([\d.e+-]+)", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"framesel train on {device} exited {r.returncode}: {(r.stderr or r.stdout)[-300:]}")
    return float(m.group(1))


def train_step(args) -> dict:
    V, D, C = (16, 32, 8) if args.cpu else (9537, 1280, 101)
    store, write_s = planted_store(args.work, V, D, C)
    cpus = os.cpu_count() or 1
    runs = [(args.device, cpus, 8 if args.cpu else 1024), ("cpu", 2, 8 if args.cpu else 64),
            ("cpu", cpus, 8 if args.cpu else 64)]
    rows = []
    for device, threads, n in runs:
        if rows and device == "cpu" and threads == 2 and rows[-1]["device"] == "cpu" and rows[-1]["threads"] == 2:
            rows.append({**rows[-1], "note": "all threads = 2: the row above"})
            continue
        lst = _lines_of(store, n, args.work / f"train-{n}.txt")
        sec = _epoch(store, lst, device, threads, args.work / "as.pt")
        rows.append({"device": device, "threads": threads, "videos_timed": n, "seconds": sec,
                     "s_per_video": sec / n, "epoch_s_projected": sec / n * V})
    speed = rows[1]["s_per_video"] / rows[0]["s_per_video"]
    return {"videos": V, "shape": [V, 25, 1, D], "classes": C, "store_write_s": write_s, "rows": rows,
            "speedup_vs_2_threads": None if args.cpu else speed, "speedup_measured": speed}


def _lines_of(store: Path, n: int, out: Path) -> Path:
    """A list of the store's first n videos with their labels."""
    from data.store import open_store

    with open_store(store) as s:
        paths, labels = s.paths[:n], s.labels[:n]
    out.write_text("".join(f"{p} {int(y)}\n" for p, y in zip(paths, labels)))
    return out


# ----------------------------------------------------------------------------- predict


def predict_step(args) -> dict:
    if framesel("predict", "--help").returncode != 0:
        return {"status": "skipped", "reason": "framesel predict does not exist on this branch"}
    work, clips, store = args.work, args.data / "clips", args.work / "e2e.zarr"
    if not store.exists():
        return {"status": "skipped", "reason": "no e2e store (the extract step did not finish)"}
    lst = _lines(clips, 4 if args.cpu else 12, work / "predict.txt")
    for cmd in (("head", store, "--train", lst, "--epochs", "2", "--device", args.device, "--quiet"),
                ("train", store, "--agent", "as", "--train", lst, "--out", work / "p.pt", "--seeds", "1",
                 "--no-partner", "--set", "epochs=1", "--device", args.device, "--quiet")):
        if framesel(*cmd).returncode != 0:
            raise RuntimeError(f"framesel {cmd[0]} failed before predict")
    t = time.perf_counter()
    r = framesel("predict", store, "--agent", work / "p.pt", "--videos", lst, "--root", clips, "--m", "4",
                 "--out", work / "pred.csv", "--device", args.device)
    if r.returncode != 0:
        raise RuntimeError(f"framesel predict exited {r.returncode}: {r.stderr[-300:]}")
    return {"seconds_predict": time.perf_counter() - t, "videos": len(lst.read_text().splitlines())}
