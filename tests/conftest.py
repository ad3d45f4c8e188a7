"""Shared test helpers: real tiny videos written with the ffmpeg binary imageio-ffmpeg ships."""
import os
import subprocess
from pathlib import Path

from extract.workers import thread_budget  # imports neither numpy nor torch

# Under pytest-xdist (the README's `-n auto`) each worker gets its share of the thread budget
# (extract/workers.py: the cores this process may run on) for OpenMP (torch) and BLAS, here
# and in the subprocesses it starts, set before numpy and torch start their pools: 2 workers
# on 2 cores run 1 thread each, not 4 threads spinning on 2 cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, thread_budget() // _WORKERS))

import numpy as np  # noqa: E402  (after the thread share above)
import pytest

# ../shared/data beside the checkout; FRAMESEL_SHARED_DATA names it elsewhere (a worktree)
SHARED_DATA = Path(os.environ.get("FRAMESEL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")

# Plumbing tests (stores, shards, resume, reports, the CLI) extract with a seeded random
# network (extract/backbones/tiny.py): what they check does not depend on the features, and
# it runs ~10x faster than EfficientNet-Lite0. Faithfulness tests keep the real weights.
TINY = ["--backbone", "tiny_random"]

# Tests that interrupt a run (kill, SIGTERM, a second process on its shard) need it still
# going when they act: with tiny_random 8 videos take < 1 s. This flow plugin sleeps a fixed
# time per pair (zero flow, 0 FLOPs), so such a run lasts as long as the test needs.
SLOW_FLOW = Path(__file__).parent / "plugins" / "slow_flow.py"


def slow_flow(seconds_per_pair: float) -> list[str]:
    """`framesel extract` options for the sleeping flow (run with ``cli_env(SLOW_FLOW)``)."""
    return ["--flow", "sleepy", "--flow-param", f"seconds={seconds_per_pair}"]


def cli_env(*plugins) -> dict:
    """The environment of a `framesel` subprocess in a test: one OpenMP thread, progress shown
    (CI unset: tests read it), and FRAMESEL_PLUGINS = ``plugins`` (none: no plugin)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", FRAMESEL_PLUGINS=",".join(str(p) for p in plugins))
    env.pop("CI", None)
    return env


def shared_data(*parts) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent: the real data sits beside the checkout as ../shared/data "
                    "(development and CI only)")
    return p


@pytest.fixture(scope="module", autouse=True)
def _torch_threads(request):
    """Torch's intra-op threads for a test module that sets ``TORCH_THREADS``, restored after.

    Modules whose tensors are tiny set 1: on a busy 2-core runner OpenMP's barrier-waiting
    threads spin against each other (measured 1.8 s vs 29 s for one DSN fit, 3.6 s vs 43 s
    for one glimpse epoch, ~30x for the torch TV-L1 tests). Autouse and module-scoped, so it
    is in force before any module-scoped fixture of that module trains anything.
    """
    n = getattr(request.module, "TORCH_THREADS", None)
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


def write_video(path, frames: np.ndarray, fps: float = 25.0, codec: str = "libx264rgb") -> Path:
    """Encode (N, H, W, 3) uint8 RGB frames losslessly (libx264rgb -qp 0, or ffv1)."""
    import imageio_ffmpeg

    n, h, w, _ = frames.shape
    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", codec]
    args += ["-qp", "0", "-preset", "ultrafast"] if codec == "libx264rgb" else []
    subprocess.run([*args, str(path)], input=np.ascontiguousarray(frames).tobytes(), check=True,
                   capture_output=True)
    return Path(path)


def moving_texture(n=12, h=256, w=340, shift=(2, 1), seed=0) -> np.ndarray:
    """(n, h, w, 3) uint8: a smooth random texture whose content moves by ``-shift`` px per
    frame (a window sliding by ``shift`` over a larger image)."""
    import cv2

    g = np.random.default_rng(seed)
    pad = n * max(abs(shift[0]), abs(shift[1])) + 4
    big = g.integers(0, 255, (h + 2 * pad, w + 2 * pad, 3), dtype=np.uint8)
    big = cv2.normalize(cv2.GaussianBlur(big, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX)
    frames = [big[pad + t * shift[1]: pad + t * shift[1] + h, pad + t * shift[0]: pad + t * shift[0] + w]
              for t in range(n)]
    return np.stack(frames).astype(np.uint8)


@pytest.fixture
def video_dir(tmp_path):
    """A folder of small real videos in two classes + an mmaction2 list (with a bad entry)."""
    root = tmp_path / "videos"
    for c, cls in enumerate(["left", "right"]):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            n = 10 + 3 * k
            write_video(root / cls / f"v{k}.mp4", moving_texture(n, shift=(2 if c == 0 else -2, k), seed=k + 3 * c))
    (root / "right" / "broken.mp4").write_bytes(b"not a video at all")
    lines = ["left/v0.mp4 0", "right/v0.mp4 1", "right/broken.mp4 1", "left/v1.mp4 0",
             "right/missing.mp4 1", "right/v1.mp4 1"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path
