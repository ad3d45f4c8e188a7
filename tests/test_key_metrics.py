"""Key precision, key recall, key fraction, per-position AUC and the intervals robust to
source clips that videos share, each against a case computed by hand."""
import numpy as np
import pytest

from data.errors import InputError
from evaluate.metrics import key_fraction, key_precision, key_recall, position_auc
from evaluate.stats import seeds_videos_test, shared_clip_variance

# 3 videos x 5 positions: video 0 and 1 positive (key positions), video 2 negative
KEY = np.array([[0, 1, 1, 0, 0],
                [0, 0, 0, 0, 1],
                [0, 0, 0, 0, 0]], bool)
KEPT = np.array([[1, 1, 0, 0, 0],     # 1 of 2 kept is key; 1 of 2 key kept
                 [0, 0, 1, 1, 1],     # 1 of 3 kept is key; 1 of 1 key kept
                 [1, 1, 1, 1, 1]], bool)


def test_key_precision_recall_fraction_by_hand():
    assert key_precision(KEPT, KEY) == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert key_recall(KEPT, KEY) == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert key_fraction(KEY) == pytest.approx((2 / 5 + 1 / 5) / 2)
    # an explicit positive mask: a positive with no key position counts 0 in precision and
    # is left out of recall (nothing to find)
    pos = np.array([True, True, True])
    assert key_precision(KEPT, KEY, pos) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    assert key_recall(KEPT, KEY, pos) == pytest.approx(0.75)
    empty = KEPT.copy()
    empty[0] = False                   # kept nothing: precision 0 for that video
    assert key_precision(empty, KEY) == pytest.approx((0 + 1 / 3) / 2)


def test_key_metrics_check_their_input():
    with pytest.raises(InputError, match="one shape"):
        key_precision(KEPT[:, :4], KEY)
    with pytest.raises(InputError, match="no positive"):
        key_precision(KEPT, np.zeros_like(KEY))
    with pytest.raises(InputError, match="boolean"):
        key_recall(KEPT * 2, KEY)


def test_position_auc_by_hand():
    score = np.array([[0.1, 0.9, 0.4], [0.4, 0.2, 0.8]])
    inside = np.array([[0, 1, 0], [1, 0, 0]], bool)
    # inside: 0.9, 0.4; outside: 0.1, 0.4, 0.2, 0.8. Pairs won: 0.9 beats all 4; 0.4 beats
    # 0.1 and 0.2, ties 0.4 (half), loses to 0.8 -> (4 + 2.5) / 8
    assert position_auc(score, inside) == pytest.approx(6.5 / 8)
    with pytest.raises(InputError, match="both inside and outside"):
        position_auc(score, np.ones_like(inside))


def test_shared_clip_variance_is_unbiased_under_its_model():
    # the multiple-membership model D_v = mean of its clips' effects + noise, on a design
    # like the benchmark's (40 videos of 6-12 of 60 clips): the moment estimate of
    # Var(mean D) averages to the model's (1' C 1) / N^2 (truncation at 0 is rare here)
    rng = np.random.default_rng(0)
    N, G = 40, 60
    members = np.zeros((N, G), np.int64)
    for v in range(N):
        members[v, rng.choice(G, rng.integers(6, 13), replace=False)] = 1
    W = members / members.sum(1, keepdims=True)
    var_c, var_e = 4.0, 0.25
    C = var_e * np.eye(N) + var_c * W @ W.T
    truth = C.sum() / N**2
    draws = rng.standard_normal((4000, G)) * np.sqrt(var_c) @ W.T + rng.standard_normal((4000, N)) * np.sqrt(var_e)
    got = np.array([shared_clip_variance(D, members) for D in draws])
    assert got.mean() == pytest.approx(truth, rel=0.05)
    naive = draws.var(axis=1, ddof=1).mean() / N          # videos taken as independent
    assert naive < 0.6 * truth
    # every video its own clip: exactly the ordinary var(D) / N
    D = draws[0]
    assert shared_clip_variance(D, np.eye(N, dtype=np.int64)) == pytest.approx(D.var(ddof=1) / N)
    # a clip held twice by one video weighs twice in that video's mean
    twice = members.copy()
    twice[0, np.flatnonzero(members[0])[0]] = 2
    assert shared_clip_variance(D, twice) != shared_clip_variance(D, members)


def test_shared_clip_interval_reduces_to_the_known_ones():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(0)
    a, b = rng.random(400) < 0.7, rng.random(400) < 0.6
    # every video its own clip: the paired t-test over videos, interval and p
    d0, lo0, hi0, p0 = seeds_videos_test(a, b)
    d1, lo1, hi1, p1 = seeds_videos_test(a, b, members=np.eye(400, dtype=int))
    assert (d1, lo1, hi1) == pytest.approx((d0, lo0, hi0)) and p1 == pytest.approx(p0)
    assert p0 == pytest.approx(ttest_rel(a.astype(float), b.astype(float)).pvalue)
    # the p-value inverts the interval: at alpha = p the interval touches 0
    _, lo_p, hi_p, _ = seeds_videos_test(a, b, alpha=p0)
    assert min(abs(lo_p), abs(hi_p)) == pytest.approx(0.0, abs=1e-9)
    # disjoint clips of 4 identical videos each: the paired t over the 100 clips (up to the
    # t quantile's degrees of freedom); taken as 400 independent videos it is half as wide
    A, B = np.repeat(a[:100], 4), np.repeat(b[:100], 4)
    groups = np.kron(np.eye(100, dtype=int), np.ones((4, 1), dtype=int))       # (400, 100)
    _, lo, hi, _ = seeds_videos_test(A, B, members=groups)
    _, lo_c, hi_c, _ = seeds_videos_test(a[:100], b[:100])
    assert hi - lo == pytest.approx(hi_c - lo_c, rel=0.02)
    _, lo_i, hi_i, _ = seeds_videos_test(A, B)
    assert (hi - lo) > 1.9 * (hi_i - lo_i)


def test_shared_clips_widen_the_interval_and_seeds_count():
    rng = np.random.default_rng(1)
    N, G = 60, 30
    members = np.zeros((N, G), int)
    for v in range(N):
        members[v, rng.choice(G, 4, replace=False)] = 1
    bad = members[:, :3].sum(1) > 0     # clips 0-2 fool the agent wherever they are
    good = members[:, 3:6].sum(1) > 0   # clips 3-5 make it right wherever they are
    a = np.where(bad, False, np.where(good, True, rng.random(N) < 0.6))
    b = rng.random(N) < 0.6
    _, lo_c, hi_c, p_c = seeds_videos_test(a, b, members=members)
    _, lo_v, hi_v, p_v = seeds_videos_test(a, b)
    assert hi_c - lo_c > hi_v - lo_v and p_c > p_v
    seeds = np.stack([a, np.roll(a, 1), np.roll(a, 2)])
    diff, lo, hi, _ = seeds_videos_test(seeds, b, members=members)
    assert diff == pytest.approx(seeds.mean() - b.mean()) and lo < diff < hi
    assert seeds_videos_test(a, a, members=members)[3] == 1.0          # no difference: p = 1
    with pytest.raises(InputError, match="no cluster"):
        seeds_videos_test(a, b, members=np.zeros((N, G), int))
    with pytest.raises(InputError, match=r"\(N, G\)"):
        seeds_videos_test(a, b, members=members[:10])
