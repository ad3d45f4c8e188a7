"""extract.sampling.tsn_positions: TSN positions and flow stacks over many video lengths."""
import numpy as np
import pytest

from data.errors import InputError
from extract.sampling import Sampling, tsn_positions

T, L = 25, 5
LENGTHS = [1, 2, 3, 4, L, L + 1, L + 2, 10, T - 1, T, T + L, T + L + 1, 2 * T, T * L, 166, 1775]


def _check_invariants(s: Sampling, n: int, t: int, l: int):
    assert s.frame_index.shape == (t,) and s.frame_index.dtype == np.int32
    assert s.flow_index.shape == (t, l + 1) and s.flow_index.dtype == np.int32
    assert (s.frame_index >= 0).all() and (s.frame_index < n).all()
    assert (np.diff(s.frame_index) >= 0).all(), "positions sorted"
    np.testing.assert_array_equal(s.flow_index[:, 0], s.frame_index)
    assert (s.flow_index >= 0).all() and (s.flow_index < n).all(), "stacks inside the video"
    steps = np.diff(s.flow_index, axis=1)
    assert np.isin(steps, (0, 1)).all(), "consecutive frames, or the last frame repeated"
    # a repeated frame only ever happens at the video's last frame
    assert (s.flow_index[:, :-1][steps == 0] == n - 1).all()


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("train", [False, True])
def test_invariants_over_many_lengths(n, train):
    s = tsn_positions(n, T, L, train=train, rng=np.random.default_rng(n))
    _check_invariants(s, n, T, L)
    if n >= L + 1:
        assert (s.frame_index <= n - L - 1).all(), "every stack fits, none clamped"
        np.testing.assert_array_equal(s.flow_index, s.frame_index[:, None] + np.arange(L + 1))


def test_test_mode_is_deterministic_tsn_centres():
    a, b = tsn_positions(1775, T, L), tsn_positions(1775, T, L)
    np.testing.assert_array_equal(a.frame_index, b.frame_index)
    for n in range(L + 1, 2001):  # TSN's _get_test_indices, index for index
        tick = (n - L) / T
        expected = [int(tick / 2 + tick * x) for x in range(T)]
        np.testing.assert_array_equal(tsn_positions(n, T, L).frame_index, expected, err_msg=str(n))
    assert a.handling == ""
    tick = (1775 - L) / T
    # every position is the centre of its own segment
    seg = np.floor(a.frame_index / tick)
    np.testing.assert_array_equal(seg, np.arange(T))


def test_train_mode_draws_one_point_per_segment_and_is_seeded():
    n = 166
    tick = (n - L) / T
    draws = [tsn_positions(n, T, L, train=True, rng=seed).frame_index for seed in range(200)]
    lo, hi = np.floor(np.arange(T) * tick), np.floor((np.arange(T) + 1) * tick)
    for d in draws:  # inside its own segment [t*tick, (t+1)*tick)
        assert ((d >= lo) & (d <= np.minimum(hi, n - L - 1))).all()
    np.testing.assert_array_equal(tsn_positions(n, T, L, train=True, rng=7).frame_index,
                                  tsn_positions(n, T, L, train=True, rng=7).frame_index)
    # random, and covering the whole valid range across draws
    stacked = np.stack(draws)
    assert len({tuple(d) for d in draws}) > 150
    assert stacked.min() == 0 and stacked.max() == n - L - 1


def test_video_shorter_than_t_repeats_positions():
    s = tsn_positions(12, T, L)  # 7 valid starts for 25 positions
    assert sorted(set(s.frame_index.tolist())) == list(range(7))
    assert s.handling == "video shorter than T: positions repeat (7 distinct of 25)"


def test_video_shorter_than_a_stack_clamps_with_zero_motion_pairs():
    s = tsn_positions(3, T, L)
    assert sorted(set(s.frame_index.tolist())) == [0, 1, 2]  # RGB sees every frame
    assert "clamped flow stack at end: 25 of 25 positions" in s.handling
    assert "last frame repeated" in s.handling and "positions repeat (3 distinct of 25)" in s.handling
    first = s.flow_index[0]
    np.testing.assert_array_equal(first, [0, 1, 2, 2, 2, 2])  # 2 real pairs, 3 zero-motion


def test_single_frame():
    s = tsn_positions(1, T, L)
    assert (s.frame_index == 0).all() and (s.flow_index == 0).all()
    assert s.handling.startswith("single frame")


def test_exact_fit_and_rgb_only():
    s = tsn_positions(L + 1, T, L)  # one valid start: every stack is the whole video
    np.testing.assert_array_equal(s.flow_index, np.tile(np.arange(L + 1), (T, 1)))
    assert "clamped" not in s.handling and "positions repeat (1 distinct" in s.handling
    rgb = tsn_positions(T, T, 0)  # L = 0: one position per frame
    np.testing.assert_array_equal(rgb.frame_index, np.arange(T))
    assert rgb.flow_index.shape == (T, 1) and rgb.handling == ""


@pytest.mark.parametrize("args", [(0, T, L), (10, 0, L), (10, T, -1), (10.5, T, L), (True, T, L)])
def test_bad_input_raises(args):
    with pytest.raises(InputError):
        tsn_positions(*args)
