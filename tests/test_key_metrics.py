"""Key precision, key recall, key fraction, per-position AUC and the cluster bootstrap over
source clips, each against a case computed by hand."""
import numpy as np
import pytest

from data.errors import InputError
from evaluate.metrics import key_fraction, key_precision, key_recall, position_auc
from evaluate.stats import bootstrap_ci, cluster_bootstrap_ci, cluster_resample

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


def test_cluster_resample_by_hand():
    # composites A = {c0, c1}, B = {c1, c2}; A right only for the agent (d = 1), B a tie (d = 0)
    d = np.array([[1.0, 0.0]])
    members = np.array([[1, 1, 0], [0, 1, 1]])
    draws = np.array([[1, 1, 1],      # every clip once: the observed 0.5
                      [0, 3, 0],      # c1 thrice: A and B both weigh 1 + 2 - 1 = 2 -> still 0.5
                      [3, 0, 0],      # c0 thrice: w_A - 1 = 2 - 1 = 1, w_B - 1 = -1 - 1 = -2
                      [0, 0, 3]])     # c2 thrice: w_A - 1 = -2, w_B - 1 = 1
    got = cluster_resample(d, members, draws)[:, 0]
    # d̄ + Σ (w_v - 1)(d_v - d̄) / N with d - d̄ = (0.5, -0.5)
    assert got.tolist() == pytest.approx([0.5, 0.5, 0.5 + (1 * 0.5 + 2 * 0.5) / 2, 0.5 + (-2 * 0.5 - 0.5) / 2])


def test_cluster_bootstrap_reduces_to_the_known_bootstraps():
    rng = np.random.default_rng(0)
    a, b = rng.random(400) < 0.7, rng.random(400) < 0.6
    # every video its own cluster: the paired video bootstrap
    d0, lo0, hi0 = bootstrap_ci(a, b, n=20000, seed=1)
    d1, lo1, hi1 = cluster_bootstrap_ci(a, b, np.eye(400, dtype=int), n=20000, seed=2)
    assert d1 == d0 and lo1 == pytest.approx(lo0, abs=0.012) and hi1 == pytest.approx(hi0, abs=0.012)
    # disjoint clusters of 4 equal videos: the classic cluster bootstrap of 100 clusters
    A, B = np.repeat(a[:100], 4), np.repeat(b[:100], 4)
    groups = np.kron(np.eye(100, dtype=int), np.ones((4, 1), dtype=int))      # (400, 100)
    _, lo, hi = cluster_bootstrap_ci(A, B, groups, n=20000, seed=3)
    _, lo_c, hi_c = bootstrap_ci(a[:100], b[:100], n=20000, seed=4)          # one video per cluster
    assert lo == pytest.approx(lo_c, abs=0.015) and hi == pytest.approx(hi_c, abs=0.015)
    # the same 400 videos treated as independent would give an interval half as wide: wrong
    _, lo_i, hi_i = bootstrap_ci(A, B, n=20000, seed=5)
    assert (hi - lo) > 1.7 * (hi_i - lo_i)


def test_shared_clips_widen_the_interval_and_seeds_are_drawn():
    rng = np.random.default_rng(1)
    N, G = 60, 30
    members = np.zeros((N, G), int)
    for v in range(N):
        members[v, rng.choice(G, 4, replace=False)] = 1
    bad = members[:, 0] > 0          # clip 0 fools the classifier: the agent loses where it is
    a = np.where(bad, False, rng.random(N) < 0.8)
    b = rng.random(N) < 0.7
    _, lo_c, hi_c = cluster_bootstrap_ci(a, b, members, n=5000)
    _, lo_v, hi_v = bootstrap_ci(a, b, n=5000)
    assert hi_c - lo_c > hi_v - lo_v
    seeds = np.stack([a, np.roll(a, 1), np.roll(a, 2)])
    diff, lo, hi = cluster_bootstrap_ci(seeds, b, members, n=2000)
    assert diff == pytest.approx(seeds.mean() - b.mean()) and lo < diff < hi
    with pytest.raises(InputError, match="no cluster"):
        cluster_bootstrap_ci(a, b, np.zeros((N, G), int))
    with pytest.raises(InputError, match=r"\(N, G\)"):
        cluster_bootstrap_ci(a, b, members[:10])
