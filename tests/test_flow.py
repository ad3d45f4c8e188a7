"""Tests for extract.flow: real OpenCV flow on frames with a known sub-pixel translation."""

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from data.errors import InputError, UnknownNameError
from extract import flow as fl
from extract import flow_cost
from extract.flow import (
    FlowConfig,
    compute_stacks,
    dequantize_flow,
    flow_algorithms,
    motion_magnitude,
    opencv_version,
    quantize_flow,
)

H, W = 96, 128
MARGIN = 8  # border pixels excluded from EPE: content enters/leaves the frame there


def shifted_pair(sx2: int, sy2: int, oy: int = 180, oy_x: int = 160):
    """Two (H, W) uint8 frames; the second shows the first moved by (sx2/2, sy2/2) px.

    Both are 2x2 box-downsampled crops of the 512x512 'camera' photo, the second crop offset
    by (-sx2, -sy2) at full resolution, so the motion is an exact half-pixel multiple of the
    box-filtered image and nothing is interpolated.
    """
    big = skdata.camera().astype(np.float64)

    def crop(y, x):
        c = big[y:y + 2 * H, x:x + 2 * W]
        return np.rint(c.reshape(H, 2, W, 2).mean(axis=(1, 3))).astype(np.uint8)

    return crop(oy, oy_x), crop(oy - sy2, oy_x - sx2)


def interior_epe(flow: np.ndarray, u: float, v: float) -> float:
    """Mean end-point error of an (H, W, 2) field against the constant (u, v), interior only."""
    f = flow[MARGIN:-MARGIN, MARGIN:-MARGIN]
    return float(np.hypot(f[..., 0] - u, f[..., 1] - v).mean())


@pytest.fixture(scope="module")
def pair():
    a, b = shifted_pair(5, -2)  # (+2.5, -1.0) px
    return np.stack([a, b])[None]  # (1, 2, H, W)


@pytest.mark.parametrize("algorithm,limit", [("tvl1", 0.15), ("farneback", 0.4), ("dis", 0.4)])
def test_recovers_subpixel_translation(pair, algorithm, limit):
    flow = compute_stacks(pair, FlowConfig(algorithm))
    assert flow.shape == (1, 1, H, W, 2) and flow.dtype == np.float32
    epe = interior_epe(flow[0, 0], 2.5, -1.0)
    print(f"{algorithm}: interior EPE {epe:.4f} px for a (+2.5, -1.0) px shift")
    assert epe < limit


def test_tvl1_recovers_integer_translation_other_direction():
    a, b = shifted_pair(-6, 4, oy=160, oy_x=200)  # (-3.0, +2.0) px
    flow = compute_stacks(np.stack([a, b])[None], FlowConfig("tvl1"))
    assert interior_epe(flow[0, 0], -3.0, 2.0) < 0.15


def test_stack_layout_matches_pairwise_flow():
    frames = [shifted_pair(2 * k, -k)[1] for k in range(4)]  # 4 frames, growing motion
    gray = np.stack([np.stack(frames[:3]), np.stack(frames[1:])])  # (P=2, L+1=3, H, W)
    cfg = FlowConfig("farneback")
    out = compute_stacks(gray, cfg)
    assert out.shape == (2, 2, H, W, 2) and out.dtype == np.float32
    # position 1, pair 0 is frames[1] -> frames[2]: one step of (+1, -0.5) px
    single = compute_stacks(np.stack(frames[1:3])[None], cfg)[0, 0]
    np.testing.assert_array_equal(out[1, 0], single)
    np.testing.assert_array_equal(out[0, 1], single)
    assert interior_epe(single, 1.0, -0.5) < 0.4


def test_clipping_to_bound(pair):
    flow = compute_stacks(pair, FlowConfig("tvl1", bound=1.5))
    assert flow.max() <= 1.5 and flow.min() >= -1.5
    interior = flow[0, 0, MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert np.mean(interior[..., 0] == np.float32(1.5)) > 0.95  # true x motion 2.5 -> clipped
    assert abs(float(np.median(interior[..., 1])) + 1.0) < 0.1  # y (-1.0) untouched


def test_default_bound_is_tsn_20():
    cfg = FlowConfig()
    assert cfg.bound == 20.0 and cfg.algorithm == "tvl1" and not cfg.quantize
    big = np.linspace(-50, 50, 2 * 4 * 4 * 2, dtype=np.float32).reshape(2, 4, 4, 2)
    q = dequantize_flow(quantize_flow(big, 20.0), 20.0)
    assert q.min() == -20.0 and q.max() == 20.0


def test_quantize_roundtrip_error_within_half_step():
    rng = np.random.default_rng(0)
    x = rng.uniform(-20, 20, size=(1000, 2)).astype(np.float32)
    q = quantize_flow(x, 20.0)
    assert q.dtype == np.uint8 and q.min() >= 0 and q.max() <= 255
    err = np.abs(dequantize_flow(q, 20.0) - x).max()
    assert err <= 20.0 / 255 + 1e-5
    # the TSN mapping: -bound -> 0, 0 -> 127.5 (rounded), +bound -> 255
    ends = quantize_flow(np.array([-20.0, 0.0, 20.0], np.float32), 20.0)
    assert ends[0] == 0 and ends[2] == 255 and ends[1] in (127, 128)


def test_quantized_stacks(pair):
    raw = compute_stacks(pair, FlowConfig("dis"))
    q = compute_stacks(pair, FlowConfig("dis", quantize=True))
    assert q.dtype == np.float32
    assert np.abs(q - raw).max() <= 20.0 / 255 + 1e-5
    levels = (q + 20.0) * 255 / 40.0
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)


def test_motion_magnitude(pair):
    flow = compute_stacks(np.concatenate([pair, pair[:, ::-1][:, :1].repeat(2, 1)]),
                          FlowConfig("farneback"))  # second position: two identical frames
    m = motion_magnitude(flow)
    assert m.shape == (2,) and m.dtype == np.float32
    assert abs(m[0] - np.hypot(2.5, 1.0)) < 0.3
    assert m[1] < 0.05
    with pytest.raises(InputError):
        motion_magnitude(flow[0])


def test_unknown_algorithm():
    with pytest.raises(UnknownNameError) as err:
        FlowConfig("flownet")
    assert "tvl1" in str(err.value) and "farneback" in str(err.value)
    with pytest.raises(KeyError):  # typed errors also subclass the builtin
        FlowConfig("nope")


def test_unknown_or_bad_parameter():
    with pytest.raises(InputError) as err:
        FlowConfig("tvl1", params=(("epsilonn", 0.05),))
    assert "epsilon" in str(err.value) and "inner_iterations" in str(err.value)
    with pytest.raises(InputError):
        FlowConfig("tvl1", params=(("warps", 2.5),))
    with pytest.raises(InputError):
        FlowConfig("farneback", params=(("levels", "three"),))
    with pytest.raises(InputError):
        FlowConfig("tvl1", bound=0)
    with pytest.raises(InputError):
        FlowConfig("tvl1", threads=-1)


def test_tvl1_defaults_read_from_opencv_and_filled_in():
    obj = cv2.optflow.DualTVL1OpticalFlow_create()
    params = dict(FlowConfig("tvl1").params)
    assert params["tau"] == pytest.approx(obj.getTau()) == 0.25
    assert params["lambda"] == pytest.approx(obj.getLambda()) == 0.15
    assert params["inner_iterations"] == obj.getInnerIterations() == 30
    assert params["outer_iterations"] == 10 and params["nscales"] == 5 and params["warps"] == 5
    assert params["scale_step"] == pytest.approx(0.8) and params["median_filtering"] == 5
    cfg = FlowConfig("tvl1", params=(("epsilon", 0.05), ("warps", 3.0)))
    names = [k for k, _ in cfg.params]
    assert names == sorted(names) and len(names) == len(params)
    assert dict(cfg.params)["epsilon"] == 0.05 and dict(cfg.params)["warps"] == 3
    assert cfg == FlowConfig("tvl1", params=(("warps", 3), ("epsilon", 0.05)))
    record = cfg.as_dict()
    assert record["params"]["epsilon"] == 0.05 and record["opencv_version"] == opencv_version()


def test_parameters_change_the_result(pair):
    base = compute_stacks(pair, FlowConfig("tvl1", params=(("warps", 1), ("nscales", 2))))
    other = compute_stacks(pair, FlowConfig("tvl1", params=(("warps", 1), ("nscales", 2),
                                                            ("lambda", 0.01))))
    assert np.abs(base - other).mean() > 1e-3


def test_dis_record_lists_preset_values():
    record = FlowConfig("dis", params=(("preset", "fast"),)).as_dict()["params"]
    assert record["preset"] == "fast" and record["PatchSize"] > 0
    with pytest.raises(InputError):
        compute_stacks(np.zeros((1, 2, 16, 16), np.uint8),
                       FlowConfig("dis", params=(("preset", "slow"),)))


def test_registry():
    assert {"tvl1", "farneback", "dis", "tvl1-torch", "tvl1-cuda"} <= set(flow_algorithms())
    with pytest.raises(ValueError, match="already registered"):
        fl.register_flow("tvl1", lambda: {}, cost=flow_cost.FARNEBACK)(lambda a, b, p: a)
    torch_params = dict(FlowConfig("tvl1-torch").params)
    assert {k: v for k, v in torch_params.items() if k in fl.tvl1_defaults()} == fl.tvl1_defaults()
    assert "device" in torch_params


@pytest.mark.parametrize("opencv_cuda, torch_cuda, expected", [
    (True, True, "tvl1-cuda"), (True, False, "tvl1-cuda"),
    (False, True, "tvl1-torch"), (False, False, "tvl1"),
])
def test_auto_order_is_opencv_cuda_then_torch_gpu_then_opencv_cpu(opencv_cuda, torch_cuda, expected):
    assert fl.choose_tvl1(opencv_cuda, torch_cuda) == expected
    assert expected in flow_algorithms()


def test_auto_on_this_machine_is_what_it_has():
    import torch

    have = fl.choose_tvl1(fl.opencv_cuda_tvl1(), torch.cuda.is_available())
    assert fl.auto_algorithm() == have


def test_tvl1_cuda_params_and_clear_error_without_cuda_opencv():
    params = dict(FlowConfig("tvl1-cuda").params)
    cpu = fl.tvl1_defaults()
    assert params["iterations"] == cpu["inner_iterations"] * cpu["outer_iterations"] == 300
    assert {k: params[k] for k in ("tau", "lambda", "theta", "nscales", "warps", "epsilon",
                                   "scale_step")} == {k: cpu[k] for k in ("tau", "lambda", "theta",
                                                      "nscales", "warps", "epsilon", "scale_step")}
    if fl.opencv_cuda_tvl1():
        pytest.skip("this OpenCV has CUDA: the error path does not apply")
    cfg = FlowConfig("tvl1-cuda")
    for call in (cfg.as_dict, lambda: compute_stacks(np.zeros((1, 2, 32, 32), np.uint8), cfg)):
        with pytest.raises(InputError, match="tvl1-cuda.*built with CUDA.*tvl1-torch"):
            call()


@pytest.mark.parametrize("bad", [
    np.zeros((2, 16, 16), np.uint8),          # missing axis
    np.zeros((1, 1, 16, 16), np.uint8),       # one frame, no pair
    np.zeros((1, 2, 16, 16), np.float32),     # not uint8
])
def test_bad_input(bad):
    with pytest.raises(InputError):
        compute_stacks(bad, FlowConfig("farneback"))


def test_threads_setting_is_restored(pair):
    before = cv2.getNumThreads()
    compute_stacks(pair, FlowConfig("farneback", threads=1))
    assert cv2.getNumThreads() == before


@pytest.mark.parametrize("algorithm, name, value, allowed", [
    ("tvl1", "epsilon", -1, "> 0"), ("tvl1", "tau", 0, "> 0"), ("tvl1", "lambda", 0.0, "> 0"),
    ("tvl1", "theta", -0.3, "> 0"), ("tvl1", "nscales", 0, ">= 1"), ("tvl1", "warps", -2, ">= 1"),
    ("tvl1", "inner_iterations", 0, ">= 1"), ("tvl1", "scale_step", 1.0, r"in \(0, 1\)"),
    ("tvl1", "scale_step", 0, r"in \(0, 1\)"), ("tvl1", "median_filtering", 7, "one of 0, 1, 3, 5"),
    ("tvl1", "gamma", -1, ">= 0"), ("tvl1-torch", "gamma", 0.5, "one of 0.0"),
    ("tvl1-torch", "batch_size", 0, ">= 1"), ("tvl1-torch", "device", "gpu", "auto, cpu, cuda or cuda:N"),
    ("tvl1-cuda", "iterations", 0, ">= 1"), ("tvl1-cuda", "device_id", -1, ">= 0"),
    ("farneback", "pyr_scale", 1.0, r"in \(0, 1\)"), ("farneback", "poly_sigma", 0, "> 0"),
    ("farneback", "flags", 4, "one of 0, 256"), ("dis", "preset", "slow", "one of ultrafast, fast, medium"),
])
def test_parameter_out_of_range_names_parameter_value_and_range(algorithm, name, value, allowed):
    """Issue 10: OpenCV runs TV-L1 with epsilon=-1 (or lambda=0, theta=0 -> NaN) silently."""
    with pytest.raises(InputError, match=rf"flow parameter '{name}' of '{algorithm}' must be {allowed}, "
                                         rf"got {value!r}"):
        FlowConfig(algorithm, params=((name, value),))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_parameter_must_be_finite(value):
    with pytest.raises(InputError, match="'epsilon' must be a finite float"):
        FlowConfig("tvl1", params=(("epsilon", value),))


@pytest.mark.parametrize("algorithm", flow_algorithms())
def test_every_parameter_has_a_rule_its_default_satisfies(algorithm):
    algo = fl._get_algorithm(algorithm)
    defaults = algo.defaults()
    assert set(algo.rules) == set(defaults), algorithm
    for name, value in defaults.items():
        assert algo.rules[name].test(value), (algorithm, name, value)
