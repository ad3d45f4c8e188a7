"""Tests for extract.flow_torch: each operator against its OpenCV counterpart, then the whole
batched TV-L1 against cv2.optflow.DualTVL1OpticalFlow on real video frames."""

import shutil
import subprocess
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from data.errors import InputError
from extract import flow_torch as ft
from extract.flow import FlowConfig, compute_stacks

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO = DATA / "fixtures" / "demo_spatiotemporal_det.mp4"


def decode_gray(path: Path, n: int, width: int = 340, height: int = 256, start: int = 0) -> np.ndarray:
    """n frames of a video from frame ``start`` on as (n, height, width) uint8 (imageio-ffmpeg)."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-an", "-vf",
           f"select=gte(n\\,{start}),scale={width}:{height}", "-fps_mode", "passthrough",
           "-frames:v", str(n), "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width).copy()


@pytest.fixture(scope="module")
def demo_frames():
    if not DEMO.exists():
        pytest.skip(f"real-data fixture {DEMO} absent (../shared/data is not shipped with the repo)")
    frames = decode_gray(DEMO, 6)
    assert frames.shape == (6, 256, 340)
    return frames


TORCH_THREADS = 1  # per-pixel TV-L1 steps (tests/conftest.py: _torch_threads)


def epe(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot(a[..., 0] - b[..., 0], a[..., 1] - b[..., 1]).mean())


@pytest.fixture(scope="module")
def rng_image():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.random((45, 61)).astype(np.float32) * 255, (0, 0), 1.0)
    return img


# ----------------------------------------------------------------------------- operators


@pytest.mark.parametrize("factor", [0.8, 0.5])
def test_resize_matches_opencv(rng_image, factor):
    down = cv2.resize(rng_image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    ours = ft.resize_linear(torch.from_numpy(rng_image)[None], down.shape, (factor, factor))[0]
    np.testing.assert_allclose(ours.numpy(), down, atol=1e-3)
    up = cv2.resize(down, (61, 45), interpolation=cv2.INTER_LINEAR)
    inv = (45 / down.shape[0], 61 / down.shape[1])
    ours_up = ft.resize_linear(torch.from_numpy(down)[None], (45, 61), inv)[0]
    np.testing.assert_allclose(ours_up.numpy(), up, atol=1e-3)


def test_bicubic_warp_matches_cv2_remap(rng_image):
    rng = np.random.default_rng(2)
    u = (rng.standard_normal(rng_image.shape) * 3).astype(np.float32)  # also reaches outside
    v = (rng.standard_normal(rng_image.shape) * 3).astype(np.float32)
    xs = np.arange(rng_image.shape[1], dtype=np.float32)[None] + u
    ys = np.arange(rng_image.shape[0], dtype=np.float32)[:, None] + v
    ref = cv2.remap(rng_image, xs, ys, cv2.INTER_CUBIC)  # BORDER_CONSTANT 0, as TV-L1 uses
    ours = ft.warp_bicubic(torch.from_numpy(rng_image)[None, None], torch.from_numpy(u)[None],
                           torch.from_numpy(v)[None])[0, 0]
    np.testing.assert_allclose(ours.numpy(), ref, atol=5e-3)


def test_median_matches_cv2(rng_image):
    for k in (3, 5):
        ref = cv2.medianBlur(rng_image, k)
        ours = ft.median_filter(torch.from_numpy(rng_image)[None], k)[0]
        np.testing.assert_array_equal(ours.numpy(), ref)


def test_gradients_and_divergence_border_rules():
    x = torch.tensor([[[1.0, 4.0, 9.0], [2.0, 3.0, 7.0], [0.0, 5.0, 6.0]]])
    dx, dy = ft.centered_gradient(x)
    assert dx[0, 0].tolist() == [1.5, 4.0, 2.5]  # half one-sided at borders, as OpenCV
    assert dy[0, :, 0].tolist() == [0.5, -0.5, -1.0]
    fx, fy = ft.forward_gradient(x)
    assert fx[0, 0].tolist() == [3.0, 5.0, 0.0] and fy[0, 2].tolist() == [0.0, 0.0, 0.0]
    # divergence is the negative adjoint of the forward gradient, <grad u, p> = -<u, div p>,
    # for duals that vanish where the gradient does (last column / row), as TV-L1's do
    g = torch.Generator().manual_seed(0)
    u, p1, p2 = (torch.randn(1, 7, 9, generator=g, dtype=torch.float64) for _ in range(3))
    p1[:, :, -1] = 0
    p2[:, -1, :] = 0
    ux, uy = ft.forward_gradient(u)
    lhs = (ux * p1 + uy * p2).sum()
    assert torch.isclose(lhs, -(u * ft.divergence(p1, p2)).sum())


# ----------------------------------------------------------------------------- the solver

FAST = dict(nscales=3, warps=2)  # fewer scales/warps than the defaults, to keep tests quick


def test_matches_opencv_tvl1_on_real_frames(demo_frames):
    crop = demo_frames[:, 64:192, 90:250]  # 160x128 of the 340x256 frames
    prev, nxt = crop[[0, 2]], crop[[1, 3]]  # two pairs, solved in one batch
    prm = ft.TVL1Params(**FAST)
    ours = ft.tvl1_batch(torch.from_numpy(prev), torch.from_numpy(nxt), prm).numpy()
    assert ours.shape == (2, 128, 160, 2) and ours.dtype == np.float32
    cv_algo = cv2.optflow.DualTVL1OpticalFlow_create(**FAST)
    errs, mags = [], []
    for i in range(2):
        ref = cv_algo.calc(prev[i], nxt[i], None)
        errs.append(epe(ours[i], ref))
        mags.append(float(np.hypot(ref[..., 0], ref[..., 1]).mean()))
    print(f"torch vs OpenCV TV-L1 ({FAST}): EPE {errs} px; mean |flow| {mags} px")
    assert max(errs) < 0.05
    assert min(mags) > 0.5  # the frames really move, so agreement is not trivial


# Real pairs at OpenCV's default parameters (5 scales x 5 warps x 300 iterations): two
# well-posed ones at 340x256 (a fight clip, the 6 fps fixture at a moderate-motion frame) and
# one where TV-L1 itself is ill-conditioned (the same fixture at frame 42: |flow| up to ~42 px
# at 340x256), decoded at half size: still ill-conditioned there and a quarter of the pixels
# (it runs to the iteration cap). Measured 2026-12-08, one thread: at 340x256 EPE 0.344 px
# against OpenCV's own floor 0.500 (38.6 s); at 170x128 0.320 against 0.380 (10.4 s).
AGREEMENT_PAIRS = [("fight/videos/fight/fi113.mp4", 20, "well-posed", (340, 256)),
                   ("fixtures/demo_spatiotemporal_det.mp4", 14, "well-posed", (340, 256)),
                   ("fixtures/demo_spatiotemporal_det.mp4", 42, "ill-conditioned", (170, 128))]


@pytest.mark.parametrize("rel, frame, kind, size", AGREEMENT_PAIRS)
def test_default_parameters_agree_with_opencv_to_its_own_noise_floor(rel, frame, kind, size):
    """The issue's goal: mean end-point error against OpenCV well under 0.1 px on real frames.
    Where TV-L1 is ill-conditioned no implementation can meet it: OpenCV's own flow moves as
    much when its input changes by +-0.01 grey level (far below the uint8 step). There we
    require agreement at that floor instead, and check that the floor really is above 0.1."""
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"real-data fixture {path} absent (../shared/data is not shipped with the repo)")
    a, b = decode_gray(path, 2, *size, start=frame)
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    ref = algo.calc(a, b, None)
    ours = ft.tvl1_batch(torch.from_numpy(a)[None], torch.from_numpy(b)[None])[0].numpy()
    rng = np.random.default_rng(0)
    noisy = [((x + rng.uniform(-0.01, 0.01, x.shape)) / 255.0).astype(np.float32) for x in (a, b)]
    floor = epe(algo.calc(*noisy, None), ref)
    err, motion = epe(ours, ref), float(np.hypot(ref[..., 0], ref[..., 1]).mean())
    print(f"{rel}@{frame}: EPE {err:.4f} px, OpenCV's own floor {floor:.4f} px, |flow| {motion:.2f} px")
    assert motion > 1.0  # the pair really moves
    if kind == "well-posed":
        assert err < 0.05 and floor < 0.05
    else:
        assert floor > 0.1 and err < 1.5 * floor


def test_batch_equals_single(demo_frames):
    crop = demo_frames[:3, 64:160, 100:228]
    prm = ft.TVL1Params(nscales=2, warps=1)
    both = ft.tvl1_batch(torch.from_numpy(crop[:2]), torch.from_numpy(crop[1:]), prm)
    one = ft.tvl1_batch(torch.from_numpy(crop[1:2]), torch.from_numpy(crop[2:3]), prm)
    np.testing.assert_allclose(both[1].numpy(), one[0].numpy(), atol=1e-4)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="torch.compile on the CPU needs a C++ compiler, and this machine has none")
def test_compiled_step_matches_eager(demo_frames):
    crop = demo_frames[:3, 64:160, 100:228]
    prm = ft.TVL1Params(nscales=2, warps=2)
    a, b = torch.from_numpy(crop[:2]), torch.from_numpy(crop[1:])
    eager = ft.tvl1_batch(a, b, prm).numpy()
    fused = ft.tvl1_batch(a, b, prm, compile=True).numpy()
    assert np.abs(eager).mean() > 0.3  # there is flow to agree on
    assert epe(fused, eager) < 1e-3
    # issue 31: one graph for every pyramid level and batch size (dynamic shapes), so a
    # third pair and another image size compile nothing new
    from torch._dynamo.utils import counters

    before = dict(counters["frames"])
    crop2 = demo_frames[:4, 40:150, 60:250]
    ft.tvl1_batch(torch.from_numpy(crop2[:3]), torch.from_numpy(crop2[1:]), prm, compile=True)
    assert dict(counters["frames"]) == before
    record = FlowConfig("tvl1-torch", params=(("compile", True),)).as_dict()["params"]
    assert record["compile"] is True


def test_late_stop_check_changes_nothing(demo_frames, monkeypatch):
    """Issue 31 fix 4: on a GPU the stopping test is read one check late (no host sync that
    drains the queue). The extra steps are masked, so flow and iteration counts are exactly
    those of the immediate check; forced here on the CPU, where the same code path runs."""
    crop = demo_frames[:3, 64:160, 100:228]
    prm = ft.TVL1Params(nscales=2, warps=2, epsilon=0.05)
    a, b = torch.from_numpy(crop[:2]), torch.from_numpy(crop[1:])
    calls = []

    def counted(*args):
        calls.append(1)
        return ft._step(*args)

    monkeypatch.setattr(ft, "_step_fn", lambda compile: (counted, ft.median_network))
    runs = {}
    for lag in (False, True):
        monkeypatch.setattr(ft, "_CHECK_LAG", lag)
        calls.clear()
        runs[lag] = (*ft.tvl1_batch(a, b, prm, return_iterations=True), len(calls))
    (f0, it0, n0), (f1, it1, n1) = runs[False], runs[True]
    assert torch.equal(f0, f1) and torch.equal(it0, it1)
    assert n1 > n0 and int(it0.sum()) < 2 * n0        # the late check ran masked steps; pairs stopped early


def test_registered_backend_contract(demo_frames):
    gray = demo_frames[None, :3, 64:160, 100:228]  # (P=1, L+1=3, 96, 128)
    small = (("nscales", 2), ("warps", 1))
    params = small + (("device", "cpu"), ("batch_size", 1))
    out = compute_stacks(gray, FlowConfig("tvl1-torch", params=params))
    ref = compute_stacks(gray, FlowConfig("tvl1", params=small))
    assert out.shape == ref.shape == (1, 2, 96, 128, 2) and out.dtype == np.float32
    assert epe(out, ref) < 0.05
    record = FlowConfig("tvl1-torch", params=params).as_dict()["params"]
    assert record["device"] == "cpu" and record["lambda"] == 0.15


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_matches_cpu(demo_frames, compile):
    crop = demo_frames[:3, 64:160, 100:228]
    prm = ft.TVL1Params(nscales=2, warps=1)
    cpu = ft.tvl1_batch(torch.from_numpy(crop[:2]), torch.from_numpy(crop[1:]), prm)
    gpu = ft.tvl1_batch(torch.from_numpy(crop[:2]).cuda(), torch.from_numpy(crop[1:]).cuda(), prm,
                        compile=compile)
    assert epe(cpu.numpy(), gpu.cpu().numpy()) < 0.01


def test_bad_parameters():
    with pytest.raises(InputError):
        ft.TVL1Params(gamma=0.1)
    with pytest.raises(InputError):
        ft.TVL1Params(median_filtering=7)
    with pytest.raises(InputError):
        ft.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError):
            ft.resolve_device("cuda")
    assert ft.resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError):
        ft.tvl1_batch(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))
