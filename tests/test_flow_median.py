"""extract.flow_median: the 3x3 and 5x5 sorting networks are exact medians.

By the 0-1 principle a comparator network puts the median on its middle wire for every input
iff it does for every 0/1 input; both networks are run here on all of them (2^9 and 2^25),
bit-packed (min = and, max = or), so the 5x5 proof takes about a second. Then the filter
itself against ``torch.median`` over an unfold (what tvl1-torch ran before) and
``cv2.medianBlur`` on floats with many ties."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from extract.flow_median import MEDIAN_NETWORKS, median_filter


def _bit_wires(n: int) -> list[np.ndarray]:
    """Wire i over all 2^n inputs x (x's bit i), packed 64 inputs to a uint64 word."""
    words = np.arange(max((1 << n) // 64, 1), dtype=np.uint64)
    out = []
    for i in range(n):
        if i < 6:       # inside one word: the same 64-bit pattern in every word
            pattern = sum(1 << b for b in range(64) if (b >> i) & 1)
            out.append(np.full(words.shape, pattern, np.uint64))
        else:           # constant over a word: set where the word index has bit i - 6
            bit = (words >> np.uint64(i - 6)) & np.uint64(1)
            out.append(np.where(bit == 1, np.uint64(2**64 - 1), np.uint64(0)))
    return out


@pytest.mark.parametrize("k", [3, 5])
def test_network_is_a_median_on_every_0_1_input(k):
    n = k * k
    wires = _bit_wires(n)
    for a, b in MEDIAN_NETWORKS[k]:
        assert 0 <= a < n and 0 <= b < n and a != b
        wires[a], wires[b] = wires[a] & wires[b], wires[a] | wires[b]
    got = np.unpackbits(wires[n // 2].view(np.uint8), bitorder="little").astype(bool)[:1 << n]
    want = np.bitwise_count(np.arange(1 << n, dtype=np.uint32)) > n // 2     # the median of 0/1s
    assert np.array_equal(got, want)


def test_a_broken_network_is_caught():
    """The proof can fail: dropping one exchange of the 3x3 network breaks it."""
    wires = _bit_wires(9)
    for a, b in MEDIAN_NETWORKS[3][:-1]:
        wires[a], wires[b] = wires[a] & wires[b], wires[a] | wires[b]
    got = np.unpackbits(wires[4].view(np.uint8), bitorder="little").astype(bool)[:512]
    assert not np.array_equal(got, np.bitwise_count(np.arange(512, dtype=np.uint32)) > 4)


def _unfold_median(u: torch.Tensor, k: int) -> torch.Tensor:
    r = k // 2
    p = F.pad(u[:, None], (r, r, r, r), mode="replicate")[:, 0]
    win = p.unfold(1, k, 1).unfold(2, k, 1)
    return win.reshape(*win.shape[:3], k * k).median(dim=-1).values


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("levels", [None, 4])
def test_filter_equals_torch_median_and_cv2(k, levels):
    """Random floats, and quantised ones (``levels``: most windows hold ties), any batch."""
    rng = np.random.default_rng(k)
    x = rng.normal(0, 3, (3, 37, 53)).astype(np.float32)
    if levels:
        x = np.round(x * levels / 6) * 6 / levels
    ours = median_filter(torch.from_numpy(x), k)
    assert ours.dtype == torch.float32 and ours.shape == x.shape
    np.testing.assert_array_equal(ours.numpy(), _unfold_median(torch.from_numpy(x), k).numpy())
    for i in range(len(x)):
        np.testing.assert_array_equal(ours[i].numpy(), cv2.medianBlur(x[i], k))


def test_filter_keeps_float64_and_small_images():
    x = torch.arange(12, dtype=torch.float64).reshape(1, 3, 4) ** 2 % 7
    ours = median_filter(x, 5)
    assert ours.dtype == torch.float64
    assert torch.equal(ours, _unfold_median(x, 5))
