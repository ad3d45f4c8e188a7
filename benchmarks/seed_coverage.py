"""How often the interval evaluate prints over training seeds covers the truth (issue 25).

A method trained with S seeds is tested on N videos beside a reference; the row over seeds
prints the seed-mean accuracy difference and a 95% interval. Here the truth is known: each
replication draws N test videos from a population and S training seeds, makes per-video
correctness from a logistic model, and asks whether each interval holds the population
difference E_seeds E_videos[a − b]. Model (logit scale):

    reference  b_v  ~ Bernoulli(σ(μ_v))                    (a seed-free head baseline), or
               b_sv ~ Bernoulli(σ(μ_v + r_s + η_sv))       (the seed's own classifier on uniform-m)
    method     a_sv ~ Bernoulli(σ(μ_v + Δ + z_s + ε_sv))
    μ_v ~ N(0.3, 1.5²) video difficulty; z_s, r_s ~ N(0, σ_seed²) seed effects;
    ε_sv, η_sv ~ N(0, σ_int²) seed × video noise.

σ_seed = 0.4 gives a seed-to-seed spread of ~0.08 in top-1, what the planted protocol of
ASConfig shows (0.375 / 0.450 / 0.542). Intervals: ``bootstrap`` (the two-level seeds ×
videos bootstrap, evaluate.stats.bootstrap_ci_seeds) and ``t`` (evaluate.stats.seeds_videos_ci,
what evaluate prints now: a t per variance term) beside ``welch`` (one t on their sum with
Welch–Satterthwaite degrees of freedom). Run: ``python -m benchmarks.seed_coverage [--reps 1000] [--quick]``.
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from evaluate.stats import bootstrap_ci_seeds, seeds_videos_ci

MU, MU_SD, DELTA, SIGMA_INT = 0.3, 1.5, 0.3, 0.5


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def truth(sigma_seed: float, per_seed_ref: bool, draws: int = 2_000_000, seed: int = 12345) -> float:
    """E[a − b] over the population of videos and seeds (Monte Carlo, ±0.0005)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(MU, MU_SD, draws)
    a = _sigmoid(mu + DELTA + rng.normal(0, sigma_seed, draws) + rng.normal(0, SIGMA_INT, draws)).mean()
    if per_seed_ref:
        b = _sigmoid(mu + rng.normal(0, sigma_seed, draws) + rng.normal(0, SIGMA_INT, draws)).mean()
    else:
        b = _sigmoid(mu).mean()
    return float(a - b)


def replicate(rng, S: int, N: int, sigma_seed: float, per_seed_ref: bool):
    """One test set and S seeds: (S, N) correctness of the method and its reference."""
    mu = rng.normal(MU, MU_SD, N)
    z = rng.normal(0, sigma_seed, (S, 1))
    a = rng.random((S, N)) < _sigmoid(mu + DELTA + z + rng.normal(0, SIGMA_INT, (S, N)))
    if per_seed_ref:
        r = rng.normal(0, sigma_seed, (S, 1))
        b = rng.random((S, N)) < _sigmoid(mu + r + rng.normal(0, SIGMA_INT, (S, N)))
    else:
        b = rng.random(N) < _sigmoid(mu)
    return a, b


def welch_t(a, b):
    """The single-t alternative: Welch–Satterthwaite degrees of freedom on A + B."""
    from scipy.stats import t as student_t
    d = a.astype(np.float64) - (b if b.ndim == 2 else b[None])
    S, N = d.shape
    A, B = d.mean(1).var(ddof=1) / S, d.mean(0).var(ddof=1) / N
    nu = (A + B) ** 2 / (A ** 2 / (S - 1) + B ** 2 / (N - 1))
    half = float(student_t.ppf(0.975, nu)) * np.sqrt(A + B)
    return d.mean(), d.mean() - half, d.mean() + half


INTERVALS = {"bootstrap": lambda a, b, i: bootstrap_ci_seeds(a, b, n=1000, seed=i),
             "welch": lambda a, b, i: welch_t(a, b),
             "t": lambda a, b, i: seeds_videos_ci(a, b)}


def coverage(S: int, N: int, sigma_seed: float, per_seed_ref: bool, reps: int, seed: int = 0) -> dict:
    """{interval: (coverage, mean width)} over ``reps`` replications."""
    true = truth(sigma_seed, per_seed_ref)
    rng = np.random.default_rng(seed)
    hits = {k: 0 for k in INTERVALS}
    width = {k: 0.0 for k in INTERVALS}
    for i in range(reps):
        a, b = replicate(rng, S, N, sigma_seed, per_seed_ref)
        for name, fn in INTERVALS.items():
            _, lo, hi = fn(a, b, i)
            hits[name] += lo <= true <= hi
            width[name] += hi - lo
    return {k: (hits[k] / reps, width[k] / reps) for k in INTERVALS}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="200 replications, one N")
    args = ap.parse_args(argv)
    reps = 200 if args.quick else args.reps
    ns = (62,) if args.quick else (62, 300, 3000)
    print(f"coverage of 95% intervals for the seed-mean difference ({reps} replications each)")
    print(f"{'S':>2} {'N':>4} {'σ_seed':>6} {'reference':>9} | {'bootstrap cov':>13} {'width':>6} | "
          f"{'welch cov':>9} {'width':>6} | {'t cov':>6} {'width':>6}")
    t0 = time.perf_counter()
    for S, N, sigma, per_seed in itertools.product((2, 3, 5), ns, (0.0, 0.15, 0.4), (False, True)):
        c = coverage(S, N, sigma, per_seed, reps)
        ref = "per seed" if per_seed else "fixed"
        print(f"{S:>2} {N:>4} {sigma:>6.2f} {ref:>9} | {c['bootstrap'][0]:>13.3f} {c['bootstrap'][1]:>6.3f} | "
              f"{c['welch'][0]:>9.3f} {c['welch'][1]:>6.3f} | {c['t'][0]:>6.3f} {c['t'][1]:>6.3f}", flush=True)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
