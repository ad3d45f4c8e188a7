"""What HDF5's flush after every video costs, beside no flush and Zarr, in one run.

Writes N videos of the default extraction's shapes (T=25 positions, K=10 crops, D=1280
float16 features for rgb and flow, rgb logits (T, K, 101) float32, 48x64 thumbnails) with
ReLU-like features (half zeros, so they compress as real ones do) through ``Store.write_video``
to: HDF5 without a flush (what framesel did before issue 10: nothing survives a kill), HDF5
with its flushes after each video (rows, then status: now), and Zarr. Prints seconds per video, MB/s
and the ratio to HDF5 without a flush; each store is written afresh, best of --repeat.

    python -m benchmarks.store                 # from the repo root; ~1 min on 2 cores
    python -m benchmarks.store --videos 50 --dir /scratch/me   # on the disk you extract to
"""
from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from data.store import Layout, StreamSpec, VideoResult, create_store, result_rows

T, K, D, C, THUMB = 25, 10, 1280, 101, (48, 64)


def layout(n: int) -> Layout:
    return Layout(paths=tuple(f"c/v{i}.mp4" for i in range(n)), labels=np.zeros(n, np.int32), T=T,
                  streams=(StreamSpec("rgb", K, D, C), StreamSpec("flow", K, D, 0)),
                  thumbnail_size=THUMB, attrs={"classes": [str(c) for c in range(C)]})


def results(n: int) -> list[VideoResult]:
    g = np.random.default_rng(0)

    def features():
        return np.maximum(g.normal(size=(T, K, D)), 0).astype(np.float16)
    return [VideoResult(100, 25.0, np.arange(T, dtype=np.int32) * 4, g.random(T).astype(np.float32),
                        {"rgb": {"features": features(), "logits": g.normal(size=(T, K, C)).astype(np.float32)},
                         "flow": {"features": features()}},
                        thumbnails=g.integers(0, 255, (T, *THUMB, 3), dtype=np.uint8))
            for _ in range(n)]


def write(path: Path, rows: list[VideoResult], flush: bool = True) -> tuple[float, float]:
    """Seconds to write every video into a new store at ``path`` (closing included), and
    the seconds of that spent in the flushes alone."""
    store = create_store(path, layout(len(rows)))
    spent = [0.0]
    if not flush:
        store.flush = lambda: None          # the pre-issue-10 HDF5 writer: one flush, at close
    else:
        inner = store.flush

        def timed_flush():
            t0 = time.perf_counter()
            inner()
            spent[0] += time.perf_counter() - t0
        store.flush = timed_flush
    t = time.perf_counter()
    for i, r in enumerate(rows):
        store.write_video(i, r)
    store.close()
    return time.perf_counter() - t, spent[0]


def size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args()
    rows = results(args.videos)
    raw = sum(np.asarray(v).nbytes for r in rows for v in result_rows(r).values()) / len(rows)
    cases = {"HDF5, no flush (before)": (".h5", False), "HDF5, flush per video": (".h5", True),
             "Zarr": (".zarr", True)}
    best, sizes, flushes = {}, {}, {}
    work = Path(tempfile.mkdtemp(prefix="framesel-bench-", dir=args.dir))
    try:
        for _ in range(args.repeat):        # interleaved, so a busy moment hits every case
            for name, (suffix, flush) in cases.items():
                path = work / f"s{suffix}"
                secs, in_flush = write(path, rows, flush)
                if secs < best.get(name, float("inf")):
                    best[name], flushes[name] = secs, in_flush
                sizes[name] = size(path)
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = best["HDF5, no flush (before)"]
    print(f"{args.videos} videos, {raw / 2**20:.2f} MiB of arrays each, best of {args.repeat}; "
          f"{platform.python_version()}, {platform.machine()}, writing to {args.dir or tempfile.gettempdir()}")
    print("| store | s/video | of which flush, ms/video | MB/s (raw) | on disk MiB | / HDF5 no flush |\n"
          "|---|---|---|---|---|---|")
    for name, secs in best.items():
        print(f"| {name} | {secs / args.videos:.4f} | {1e3 * flushes[name] / args.videos:.2f} | "
              f"{raw * args.videos / secs / 1e6:.0f} | {sizes[name] / 2**20:.1f} | {secs / base:.2f} |")


if __name__ == "__main__":
    main()
