"""Paired significance of two classifiers on the same test videos.

Both functions take per-video correctness, ``correct_a`` and ``correct_b``: (N,) bool (or
0/1) arrays over the same N videos in the same order, e.g. ``scores.argmax(1) == labels``.
"""

from __future__ import annotations

import math

import numpy as np

from data.errors import InputError

EXACT_BELOW = 25  # discordant pairs below which McNemar uses the exact binomial test


def _check_pair(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise InputError(f"correct_a and correct_b must be non-empty (N,) arrays of one length, "
                         f"got shapes {a.shape} and {b.shape}")
    for name, x in (("correct_a", a), ("correct_b", b)):
        if not (x.dtype == bool or np.issubdtype(x.dtype, np.number)) or not np.isin(x, (0, 1)).all():
            raise InputError(f"{name} must be boolean (or 0/1) per-video correctness")
    return a.astype(bool), b.astype(bool)


def bootstrap_ci(correct_a, correct_b, *, n: int = 10000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap percentile interval for accuracy(a) - accuracy(b).

    Returns ``(diff, lo, hi)`` as fractions: the observed difference and the
    ``alpha/2`` and ``1 - alpha/2`` quantiles of ``n`` bootstrap differences.

    Resampling videos with replacement only matters through how many of the drawn videos
    have d = a - b equal to +1, 0 and -1, and those counts are multinomial with the
    observed proportions. Drawing them directly is the same distribution as resampling
    (N,) indices, at O(n) instead of O(n N) cost.
    """
    a, b = _check_pair(correct_a, correct_b)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n (bootstrap resamples) must be a positive integer, got {n!r}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie in (0, 1), got {alpha!r}")
    num = a.size
    plus, minus = int((a & ~b).sum()), int((~a & b).sum())
    probs = np.array([plus, minus, num - plus - minus], np.float64) / num
    counts = np.random.default_rng(seed).multinomial(num, probs, size=int(n))
    diffs = (counts[:, 0] - counts[:, 1]) / num
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return (plus - minus) / num, float(lo), float(hi)


def mcnemar(correct_a, correct_b) -> tuple[float, float]:
    """McNemar's test of equal accuracy on paired predictions: ``(statistic, p_value)``.

    With b = videos only ``a`` gets right and c = videos only ``b`` gets right:
    below 25 discordant videos, the exact two-sided binomial test (statistic = min(b, c),
    p = min(1, 2 P[Bin(b + c, 1/2) <= min(b, c)])); otherwise the chi-squared test with
    Edwards' continuity correction, statistic = max(0, |b - c| - 1)^2 / (b + c), one
    degree of freedom. The max(0, ...) keeps b = c at statistic 0, p = 1 (statsmodels
    squares |b - c| - 1 = -1 there instead). No discordant video gives (0.0, 1.0).
    """
    a, b_ = _check_pair(correct_a, correct_b)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    m = b + c
    if m == 0:
        return 0.0, 1.0
    if m < EXACT_BELOW:
        low = min(b, c)
        tail = sum(math.comb(m, i) for i in range(low + 1)) / 2**m  # exact: integers up to 2**24
        return float(low), min(1.0, 2.0 * tail)
    stat = max(0, abs(b - c) - 1) ** 2 / m
    return float(stat), math.erfc(math.sqrt(stat / 2.0))  # chi2(1) survival function


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error
    rate at α when each adjusted p is compared with α).

    p_values: (n,) floats in [0, 1] -> (n,) float64 adjusted p-values in the input order:
    with p_(1) <= ... <= p_(n) sorted, adj_(i) = max_{j <= i} min(1, (n - j + 1) p_(j)).
    An empty family gives an empty array.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise InputError(f"p_values must be a 1-D array of probabilities in [0, 1], got {p_values!r}")
    n = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((n - np.arange(n)) * p[order]))
    out = np.empty(n, np.float64)
    out[order] = adjusted
    return out


def _seed_pairs(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    """(S, N) correctness of the agent and of its reference, the reference broadcast over the
    seeds when it does not depend on them ((N,)); each seed's pair checked as one paired test's."""
    a, b = np.atleast_2d(np.asarray(correct_a)), np.asarray(correct_b)
    if b.ndim == 1 and b.shape[0] == a.shape[1]:
        b = np.broadcast_to(b, a.shape)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise InputError(f"correct_a (S, N) and correct_b (S, N) or (N,) must agree, got {a.shape} and "
                         f"{np.shape(correct_b)}")
    for row_a, row_b in zip(a, b):
        _check_pair(row_a, row_b)
    return a, b


def bootstrap_ci_seeds(correct_a, correct_b, *, n: int = 10000, alpha: float = 0.05,
                       seed: int = 0, chunk: int = 500) -> tuple[float, float, float]:
    """Two-level paired bootstrap of the seed-mean accuracy difference: each resample draws
    S training seeds and N videos with replacement, so the interval holds the training
    variance as well as the test-set variance.

    correct_a: (S, N) bool per-seed per-video correctness of the agent; correct_b: (S, N)
    (the same seed's reference, e.g. its own classifier on uniform-m) or (N,) (a reference
    that does not depend on the seed). Returns ``(diff, lo, hi)``: the observed seed-mean
    difference and the ``alpha/2`` and ``1 - alpha/2`` quantiles. With S = 1 only videos
    vary (the same distribution as :func:`bootstrap_ci`)."""
    a, b = _seed_pairs(correct_a, correct_b)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n (bootstrap resamples) must be a positive integer, got {n!r}")
    d = a.astype(np.float64) - b.astype(np.float64)                # (S, N) in {-1, 0, 1}
    S, N = d.shape
    rng, diffs = np.random.default_rng(seed), []
    for start in range(0, int(n), chunk):
        k = min(chunk, int(n) - start)
        seed_w = rng.multinomial(S, np.full(S, 1.0 / S), size=k) / S        # (k, S) seed weights
        video_w = rng.multinomial(N, np.full(N, 1.0 / N), size=k) / N       # (k, N) video weights
        diffs.append(np.einsum("ks,sn,kn->k", seed_w, d, video_w))
    lo, hi = np.quantile(np.concatenate(diffs), [alpha / 2, 1 - alpha / 2])
    return float(d.mean()), float(lo), float(hi)


def seeds_videos_ci(correct_a, correct_b, *, alpha: float = 0.05, members=None) -> tuple[float, float, float]:
    """Interval for the seed-mean accuracy difference of a method trained with S seeds,
    tested on the same N videos, that holds both the training-seed and the test-video
    variance (the one evaluate prints over seeds).

    correct_a: (S, N) bool per-seed per-video correctness of the method; correct_b: (S, N)
    (a per-seed reference, e.g. the seed's own classifier on uniform-m) or (N,) (a reference
    that does not depend on the seed). Returns ``(diff, lo, hi)``.

    With d_sv = a_sv − b_sv, the seed means d_s = mean_v d_sv and the video means
    D_v = mean_s d_sv, the variance of the overall mean is estimated as
    ``A + B = var_s(d_s)/S + var_v(D_v)/N`` (ddof 1): the seed term holds the seed effect
    (plus the seed × video noise over N, counted a second time in B: conservative), the video
    term the test-set sampling. Each term gets its own t quantile and the half-width is
    ``√(t²_{1−α/2, S−1}·A + t²_{1−α/2, N−1}·B)``: where the seeds dominate it is the t
    interval over S seeds, where the videos do the paired t over N videos. (A single
    Welch–Satterthwaite t on A + B estimates its degrees of freedom from the 3 seeds
    themselves and covered 0.92 in the simulation's worst case at S = 3; the two-level
    bootstrap, :func:`bootstrap_ci_seeds`, ~0.80-0.90: resampling 3 seeds from 3 understates
    their spread.) benchmarks/seed_coverage.py simulates the coverage of each. S = 1: only
    the video term (a paired t-interval over videos).

    ``members``: (N, G) counts of each source clip in each video (data.truth.memberships)
    when videos share clips (untrimmed composites): B becomes :func:`shared_clip_variance`
    (benchmarks/cluster_coverage.py simulates its coverage)."""
    return seeds_videos_test(correct_a, correct_b, alpha=alpha, members=members)[:3]


def seeds_videos_test(correct_a, correct_b, *, alpha: float = 0.05,
                      members=None) -> tuple[float, float, float, float]:
    """:func:`seeds_videos_ci`'s ``(diff, lo, hi)`` and the p-value of "no difference" that
    inverts it: the α at which the interval's half-width equals |diff| (p < α exactly when
    the 1 − α interval leaves 0 out). diff = 0 gives p = 1; a nonzero diff with no
    variance at all, p = 0."""
    from scipy.optimize import brentq
    from scipy.stats import t as student_t

    a, b = _seed_pairs(correct_a, correct_b)
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie in (0, 1), got {alpha!r}")
    d = a.astype(np.float64) - b.astype(np.float64)                 # (S, N)
    S, N = d.shape
    A = d.mean(1).var(ddof=1) / S if S > 1 else 0.0
    if members is not None:
        B = shared_clip_variance(d.mean(0), members)
    else:
        B = d.mean(0).var(ddof=1) / N if N > 1 else 0.0
    mean = float(d.mean())

    def half(al: float, upper=lambda al, df: student_t.isf(al / 2, df)) -> float:
        """Half-width at level al: each variance term with its t quantile (terms of zero
        variance add nothing; q * q is inf, not an OverflowError, at a tiny al)."""
        terms = [(float(upper(al, df)), var) for df, var in ((S - 1, A), (N - 1, B)) if df > 0 and var > 0]
        return math.sqrt(sum(q * q * var for q, var in terms))

    h = half(alpha, lambda al, df: student_t.ppf(1 - al / 2, df))
    if mean == 0.0 or A + B == 0.0:
        return mean, mean - h, mean + h, float(mean == 0.0)
    lo_x, hi_x = math.log(1e-300), math.log1p(-1e-12)       # solved in log α: p can be tiny
    if half(math.exp(hi_x)) >= abs(mean):
        p = 1.0
    elif half(math.exp(lo_x)) <= abs(mean):
        p = 1e-300
    else:
        p = math.exp(brentq(lambda x: half(math.exp(x)) - abs(mean), lo_x, hi_x, xtol=1e-12))
    return mean, mean - h, mean + h, float(p)


def shared_clip_variance(D, members) -> float:
    """Variance of mean_v D_v when videos share source clips (untrimmed composites): the
    multiple-membership random-effects model (Browne, Goldstein & Rasbash 2001, "Multiple
    membership multiple classification models", Statistical Modelling 1)
    ``D_v = μ + Σ_g w_vg c_g + ε_v`` with w_vg = members[v, g] / Σ_g members[v, g] (each video
    the mean of its clips' effects), clip effects c_g of variance σ²_c and video noise ε_v of
    variance σ²_e, all independent. Then ``Var(mean D) = (N σ²_e + σ²_c 1ᵀK1) / N²`` with
    K = W Wᵀ: two videos covary by the share of clips they hold in common.

    σ²_e and σ²_c are estimated by the method of moments on e = P D (P = I − J/N, the
    centring): E[eᵀe] = σ²_e tr P + σ²_c tr PK and E[eᵀKe] = σ²_e tr KP + σ²_c tr PKPK, a
    2 × 2 linear system (least squares when one video per clip makes it singular: the total
    is what counts), each component truncated at 0. The result is floored at the ordinary
    var(D)/N: shared clips never make an interval narrower than taking the videos as
    independent. One clip per video gives exactly var(D)/N.

    Why not simpler rules: counting a pair of videos once per shared clip (a bootstrap that
    draws clips and moves each video with every clip it holds) counts each composite's own
    variance 6-12 times; summing e_v e_w over pairs that share a clip (the dyadic estimator)
    collapses to ~0 when nearly every pair shares one (91 % in the benchmark's test design).
    benchmarks/cluster_coverage.py measures all three: this one covers 0.94-0.98, the
    per-clip one 1.00 at ~2.7× the width, the pair sum 0.90.

    D: (N,) per-video differences; members: (N, G) non-negative integer counts."""
    D = np.asarray(D, np.float64)
    m = np.asarray(members)
    N = D.shape[0]
    if m.ndim != 2 or m.shape[0] != N or m.shape[1] == 0 or not np.issubdtype(m.dtype, np.integer) or (m < 0).any():
        raise InputError(f"members must be (N, G) = ({N}, G) non-negative integer counts, got {m.shape} {m.dtype}")
    if (m.sum(1) == 0).any():
        raise InputError(f"{int((m.sum(1) == 0).sum())} videos belong to no cluster")
    if N < 2:
        return 0.0
    e = D - D.mean()
    W = m / m.sum(1, keepdims=True)
    K = W @ W.T                                                      # (N, N)
    PKP = K - (K.sum(0)[None, :] + K.sum(1)[:, None]) / N + K.sum() / N**2
    tr_P, tr_PK = N - 1.0, float(np.trace(K) - K.sum() / N)
    A = np.array([[tr_P, tr_PK], [tr_PK, float((PKP * PKP).sum())]])
    q = np.array([e @ e, e @ K @ e])
    var_e, var_c = np.linalg.lstsq(A, q, rcond=None)[0]
    if var_c < 0:
        var_e, var_c = q[0] / tr_P, 0.0
    elif var_e < 0:
        var_e, var_c = 0.0, q[1] / A[1, 1]
    return float(max((N * var_e + var_c * K.sum()) / N**2, e @ e / (N * (N - 1))))
