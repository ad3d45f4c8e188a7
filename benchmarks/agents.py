"""Training throughput of the ``as`` agent: its per-video default and the batch option against
a literal Algorithm 1.

Run from the repository root as a module (the file name would shadow the ``agents``
package if run as a script):

    .venv/bin/python -m benchmarks.agents [--quick] [--threads 2] [--device cpu] [--json OUT]

Cache: UCF101-sized synthetic states — 9,537 training videos (split 1) × 25 positions × 10
crops, D = 1280 (EfficientNet-Lite0, framesel's default backbone; BN-Inception would be
1024), C = 101, random values. Only ``--videos`` of them are materialised and timed; the
epoch and the 45-epoch run are extrapolated linearly (per-video cost does not depend on the
data set size: no term of either loop grows with V).

Every implementation trains the same network (BiLSTM 1381→256 ×2 + FC + sigmoid) with the
paper's settings (N = 8 episodes, frame-based actions, Adam 1e-5, wd 1e-5, β = 0.1, Ω = 10).
Rows: the literal loops (per video, per episode); ``ASAgent.fit`` at its default — one Adam
update per video as Algorithm 1, vectorised over the video's N episodes and K crops; and
``batch_size`` B > 1, a departure that averages B videos per update (B× fewer steps, so at
the same lr it learns less per epoch: see ASConfig's docstring for what that costs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

if not __package__:
    raise SystemExit("run as a module from the repository root: python -m benchmarks.agents")

from agents.as_agent import ASAgent, ASConfig, as_reward, sampling_loss, state_input  # noqa: E402
from agents.base import States  # noqa: E402
from agents.rl import MovingAverageBaseline, bernoulli_log_prob  # noqa: E402

UCF101_TRAIN, T, K, D, C = 9537, 25, 10, 1280, 101


def synthetic_cache(V: int, seed: int = 0) -> States:
    """(V, 25, 10, 1280) float32 ReLU-like features and (V, 25, 10, 101) logits, random."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(V, T, K, D, generator=g).clamp_min_(0)
    logits = torch.randn(V, T, K, C, generator=g) * 2
    return States(features=feats, logits=logits, labels=torch.randint(0, C, (V,), generator=g))


def literal_algorithm1(agent: ASAgent, train: States, device) -> None:
    """000 Algorithm 1 as written: for each video, compute p⁰ and p^a, then for each of the N
    episodes sample actions, p¹ and R_n; one backward and one Adam step per video; then
    update that video's moving-average baseline b."""
    c, net = agent.config, agent.module.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    baseline = MovingAverageBaseline(train.shape[0], c.baseline_momentum)
    for v in range(train.shape[0]):                                  # line 2–3: one video
        f, lg = train.features[v:v + 1].to(device), train.logits[v:v + 1].to(device)
        probs = torch.softmax(lg[0], dim=-1)                          # (T, K, C) s_t^r
        p0 = probs.mean(dim=(0, 1))                                   # line 5
        pa = net(state_input(f, lg, c.state)).mean(0)                # line 6: (T,), crops averaged
        rewards, logps = [], []
        for _ in range(c.episodes):                                   # line 7
            a = torch.bernoulli(pa.detach())                          # line 8, eq. 1
            kept = a.sum() * K                                       # cells: positions × crops
            p1 = (a[:, None, None] * probs).sum((0, 1)) / kept if kept > 0 else p0   # line 9, eq. 3
            rewards.append(as_reward(p0, p1, train.labels[v].to(device), c.omega))  # line 10
            logps.append(bernoulli_log_prob(pa, a).sum())
        b = baseline(torch.tensor([v]))[0].to(device)
        j = sum((r - b) * lp for r, lp in zip(rewards, logps)) / c.episodes   # eq. 8
        loss = -j + sampling_loss(pa[None], c.m, c.beta)              # eq. 9
        opt.zero_grad(set_to_none=True)
        loss.backward()                                               # line 12
        opt.step()
        baseline.update(torch.tensor([v]), torch.stack(rewards).mean()[None].cpu())   # line 13


def vectorised(agent: ASAgent, train: States, device) -> None:
    """One epoch of :meth:`ASAgent.fit` (``batch_size`` videos per update × episodes × crops)."""
    agent.fit(train, device=device)


def _time(fn, agent, train, device, repeats: int) -> tuple[float, float]:
    """(wall, process CPU) seconds of the best of ``repeats`` timed passes, after one untimed
    warm-up on 2 videos. CPU time is reported too because a shared machine inflates wall time."""
    fn(agent, train.subset(list(range(2))), device)
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        agent.history = []
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn(agent, train, device)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def run(videos: int, threads: int, device: str, repeats: int, batch_size: int) -> list[dict]:
    torch.set_num_threads(threads)
    train = synthetic_cache(videos)
    cases = [("literal Algorithm 1 (per video)", literal_algorithm1, ASConfig(epochs=1)),
             ("default: per video, vectorised N x K", vectorised, ASConfig(epochs=1)),
             (f"batch {batch_size} (departure)", vectorised, ASConfig(epochs=1, batch_size=batch_size)),
             (f"batch {batch_size}, proj 256 (departures)", vectorised,
              ASConfig(epochs=1, batch_size=batch_size, proj=256))]
    rows = []
    for name, fn, cfg in cases:
        agent = ASAgent(cfg, num_classes=C, feature_dim=D, seed=0)
        secs, cpu = _time(fn, agent, train, device, repeats)
        vps = videos / secs
        rows.append({"implementation": name, "videos": videos, "seconds": secs, "cpu_seconds": cpu,
                     "videos_per_s": vps, "load_avg_1min": os.getloadavg()[0],
                     "epoch_s": UCF101_TRAIN / vps, "run_45_epochs_h": 45 * UCF101_TRAIN / vps / 3600})
    base = rows[0]["videos_per_s"]
    for r in rows:
        r["speedup"] = r["videos_per_s"] / base
    return rows


def _table(rows, threads, device) -> str:
    head = (f"as training throughput — synthetic UCF101 split-1 cache ({UCF101_TRAIN} videos × {T} × {K} crops, "
            f"D={D} EfficientNet-Lite0, C={C}), N=8 episodes, hidden 256; device {device}, "
            f"{threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    lines = [head, f"{'implementation':42s} {'videos':>6s} {'wall s':>8s} {'cpu s':>8s} {'load':>5s} "
                   f"{'videos/s':>9s} {'speedup':>8s} {'epoch (s)':>10s} {'45 epochs (h)':>14s}"]
    for r in rows:
        lines.append(f"{r['implementation']:42s} {r['videos']:6d} {r['seconds']:8.2f} {r['cpu_seconds']:8.2f} "
                     f"{r['load_avg_1min']:5.1f} {r['videos_per_s']:9.1f} {r['speedup']:7.2f}x "
                     f"{r['epoch_s']:10.0f} {r['run_45_epochs_h']:14.2f}")
    lines.append("videos/s, epoch and 45-epoch times are wall-clock; 'load' is the 1-minute load average "
                 "after each pass (a busy shared machine inflates wall time)")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 videos, one pass: a smoke run")
    ap.add_argument("--videos", type=int, default=256, help="videos timed per implementation")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (2 = the target machine)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    videos = 32 if args.quick else args.videos
    rows = run(videos, args.threads, args.device, args.repeats, args.batch_size)
    print(_table(rows, args.threads, args.device))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
