"""How often each interval for an accuracy difference on untrimmed composites covers the
truth, when composites share source clips (issue 27's "every interval over source clips").

The composites are the untrimmed benchmark's own test design: ``data.compose.plan`` on the
fight test list (40 composites of 6-12 clips, 1-2 fight clips in each positive, noFight
clips reused up to ~12 times; only the list is read, no video). In each replication every
source clip draws an effect u_g; a composite's difficulty is h_v = λ · agg_{g in v} u_g + ε_v;
method a is right with probability Φ(0.3 + h_v), method b with Φ(0.3) (no clip dependence),
so the per-composite differences d_v = a_v − b_v are dependent exactly where composites share
a clip. The truth is the difference's expectation over clips and noise (the mean of d over
every replication's composites; its Monte-Carlo error is printed). Cases (agg, λ):

- ``none``   λ = 0: composites independent;
- ``mean``   λ = 1.5, agg = mean of the composite's clips (each clip a small share);
- ``max``    λ = 1.5, agg = max (the hardest clip decides the composite);
- ``bad``    u_g = 3 for 10 % of clips, else 0, agg = max (a few clips fool the classifier
  wherever they appear).

Intervals (95 %, each with the t quantile of evaluate/stats.seeds_videos_test):

- ``videos``   composites independent (var(d)/N): what McNemar and the video bootstrap assume;
- ``per-clip`` every clip a cluster and each composite counted in each of its clips
  (Σ_g (Σ_{v∋g} e_v)² / N²: the variance of the clip bootstrap framesel used before, which
  counts each composite's own variance 6-12 times);
- ``pairs``    the dyadic estimator (Σ e_v e_w over pairs sharing a clip, each pair once,
  / N(N−1); floored at ``videos``);
- ``shared``   evaluate/stats.shared_clip_variance (a multiple-membership random-effects
  model's variance components by moments; floored at ``videos``): what evaluate --truth
  reports now.

    python benchmarks/cluster_coverage.py [--reps 2000] [--seed 0]

Prints per case and interval the coverage and the mean width; the numbers are in
benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.compose import ComposeConfig, plan  # noqa: E402
from data.lists import read_list  # noqa: E402
from evaluate.stats import shared_clip_variance  # noqa: E402

FIGHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight"
CASES = {"none": (0.0, "mean", "normal"), "mean": (1.5, "mean", "normal"), "max": (1.5, "max", "normal"),
         "bad": (1.0, "max", "bad")}


def design(test_list: Path, videos: int = 40, seed: int = 1) -> np.ndarray:
    """(N, G) 0/1 memberships of the benchmark's test composites (its seed: --seed + 1)."""
    videos_list = read_list(str(test_list), classes=str(test_list.parent / "classes.txt"), root=str(test_list.parent))
    plans = plan(videos_list, ComposeConfig(videos=videos, seed=seed))
    used = sorted({s for p in plans for s in p.sources})
    col = {s: j for j, s in enumerate(used)}
    m = np.zeros((len(plans), len(used)), np.int64)
    for v, p in enumerate(plans):
        for s in p.sources:
            m[v, col[s]] = 1
    return m


def simulate(members: np.ndarray, case: str, reps: int, rng) -> np.ndarray:
    """(reps, N) per-composite differences a − b of one case."""
    from scipy.stats import norm

    lam, agg, effects = CASES[case]
    N, G = members.shape
    u = (3.0 * (rng.random((reps, G)) < 0.1)) if effects == "bad" else rng.standard_normal((reps, G))
    held = members.astype(bool)
    if agg == "mean":
        h = u @ members.T / members.sum(1)
    else:
        h = np.stack([np.where(held[v], u, -np.inf).max(1) for v in range(N)], 1)
    h = lam * h + 0.5 * rng.standard_normal((reps, N))
    a = rng.random((reps, N)) < norm.cdf(0.3 + h)
    b = rng.random((reps, N)) < norm.cdf(0.3 + 0.5 * rng.standard_normal((reps, N)))
    return a.astype(np.float64) - b.astype(np.float64)


def per_clip_variance(D: np.ndarray, members: np.ndarray) -> float:
    e = D - D.mean()
    return float(((members.T @ e) ** 2).sum() / len(D) ** 2)


def pair_variance(D: np.ndarray, members: np.ndarray) -> float:
    e, N = D - D.mean(), len(D)
    shares = (members @ members.T) > 0
    return float(max(e @ shares @ e, e @ e) / (N * (N - 1)))


def coverage(d: np.ndarray, members: np.ndarray, truth: float) -> dict:
    from scipy.stats import t as student_t

    N = d.shape[1]
    q = float(student_t.isf(0.025, N - 1))
    var = {"videos": lambda D: D.var(ddof=1) / N, "per-clip": lambda D: per_clip_variance(D, members),
           "pairs": lambda D: pair_variance(D, members), "shared": lambda D: shared_clip_variance(D, members)}
    out = {}
    for name, f in var.items():
        half = np.array([q * np.sqrt(f(D)) for D in d])
        mean = d.mean(1)
        out[name] = (float((np.abs(mean - truth) <= half).mean()), float(2 * half.mean()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", default=str(FIGHT / "test.txt"), help="the source test list (default: the fight set's)")
    args = ap.parse_args(argv)
    if not Path(args.list).exists():
        raise SystemExit(f"{args.list}: not found (../shared/data/fight beside the checkout, or --list)")
    members = design(Path(args.list))
    reuse = members.sum(0)
    print(f"design: {members.shape[0]} composites, {members.shape[1]} source clips, {members.sum(1).min()}-"
          f"{members.sum(1).max()} clips per composite, each clip in {reuse.min()}-{reuse.max()}; pairs sharing a "
          f"clip: {((members @ members.T) > 0).mean():.2f} (the diagonal included)")
    rng = np.random.default_rng(args.seed)
    print(f"{'case':6} {'truth':>7} {'± MC':>6} " + " ".join(f"{n:>18}" for n in ("videos", "per-clip", "pairs", "shared")))
    for case in CASES:
        d = simulate(members, case, args.reps, rng)
        truth, mc = float(d.mean()), float(d.mean(1).std() / np.sqrt(args.reps))
        cov = coverage(d, members, truth)
        print(f"{case:6} {truth:+7.3f} {mc:6.4f} " + " ".join(f"{c:8.3f} w {w:7.3f}" for c, w in cov.values()),
              flush=True)
    print("coverage of the truth by the 95 % interval (w: its mean width)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
