"""The light stage at dataset scale (issue 13): peak memory, epoch time and read speed of
``framesel head`` / ``train --agent as`` / ``evaluate`` streaming from the store against
holding the list's states in memory.

Run from the repository root as a module:

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.stream --out /tmp/stream [--small 600] [--large 6000]
                                                            [--limit-gib 4] [--quick]

Store: one real Zarr store of ``--large`` videos with real shapes, T = 25 positions × K = 10
crops × D = 1280 (EfficientNet-Lite0, framesel's default) float16 features, C = 101 classes
(UCF101), ReLU-like random values (compressed as extract writes them); lists of the first
``--small`` and of all ``--large`` videos (same store, so only the list size changes).

1. **Read speed**: the small list's features through ``States.batches`` (32 videos a batch,
   inline as a CPU trainer reads, and 2 reads ahead on 2 threads as for a GPU), in chunk
   order and shuffled: GB/s of float16 read (delivered as float32).
2. **Peak RSS** of ``framesel head`` (1 epoch; it writes the logits the rest reads),
   ``framesel train --agent as`` (1 epoch, ``batch_size=16`` so that an epoch of the large
   list ends in minutes: memory per batch, not per list) and ``framesel evaluate`` (--m 4,
   the head's uniform, random and max_response and the as checkpoint; its test lists are
   ``--eval-small`` / ``--eval-large`` videos, by default the same sizes as the others'),
   each a subprocess under an address-space limit (``ulimit -v``) of ``--limit-gib``: on
   both lists with ``--load stream``, and with ``--load memory`` (small: the reference;
   large: its states exceed the limit, so it must fail). Peak RSS is the child's
   ``ru_maxrss``. ``--only evaluate`` runs evaluate's rows alone (making the head's logits
   and the checkpoint first when the store lacks them) and prints its growth per 1,000 videos.
3. **Epoch time**: one ``as`` epoch at its defaults (per-video Adam updates) on the first
   ``--epoch-videos`` videos, in memory vs streamed, side by side, the ratio, and whether the
   weights are identical.
4. **Seeds together**: ``--seeds-n`` seeds of ``as`` (defaults, per-video updates), one
   epoch on ``--seed-videos`` videos, trained one after another vs in one batched pass
   (agents/together.py), side by side: seeds/s, the ratio, the largest weight difference.
   Twice: at the real shapes above (on a CPU the arithmetic is the cost) and at tiny ones
   (D = 64, K = 1, hidden 16: each step is per-op overhead, as one video's step is on a GPU).
5. **Mixed precision** (``as --set precision=bfloat16``): one epoch at the real shapes on
   ``--seed-videos`` videos, float32 vs bfloat16 autocast, side by side; and whether it
   changes what the agent learns: ``ASConfig``'s planted protocol (240 train / 240 test
   videos, T = 25, 3 key positions, the paper's defaults, ``--precision-epochs`` epochs,
   seeds 0/1/2): top-1 at m = 4 and top-5 key precision (chance 0.12) of each seed.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

if not __package__:
    raise SystemExit("run as a module from the repository root: python -m benchmarks.stream")

from agents.as_agent import ASAgent, ASConfig  # noqa: E402
from agents.from_store import load_states, rows_for_list  # noqa: E402
from data.layout import Layout, StreamSpec, VideoResult  # noqa: E402
from data.lists import read_list  # noqa: E402
from data.store import create_store, open_store  # noqa: E402

T, K, D, C = 25, 10, 1280, 101
GIB = 1024 ** 3


def write_store(root: Path, V: int, seed: int = 0) -> Path:
    """A Zarr store of V synthetic videos (rgb only, no logits yet) and lists of its videos."""
    path = root / "big.zarr"
    if path.exists():
        return path
    paths = tuple(f"synthetic/v{i:06d}.mp4" for i in range(V))
    labels = (np.arange(V) % C).astype(np.int32)
    layout = Layout(paths=paths, labels=labels, T=T, streams=(StreamSpec("rgb", K, D),),
                    attrs={"classes": [f"class{i}" for i in range(C)], "multilabel": False, "T": T, "crops": K,
                           "flow_stack": 1, "config_sha256": f"stream-benchmark-{seed}",
                           "backbone": {"rgb": {"name": "synthetic", "gflops_per_frame": 0.0}}})
    g = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with create_store(path, layout) as s:
        for i in range(V):
            feats = np.maximum(g.standard_normal((T, K, D), dtype=np.float32), 0).astype(np.float16)
            s.write_video(i, VideoResult(num_frames=T, fps=25.0, frame_index=np.arange(T, dtype=np.int32),
                                         motion=np.ones(T, np.float32), streams={"rgb": {"features": feats}}))
            if (i + 1) % 2000 == 0:
                print(f"  wrote {i + 1}/{V} videos ({time.perf_counter() - t0:.0f} s)", flush=True)
    return path


def write_list(root: Path, name: str, n: int) -> Path:
    path = root / f"{name}.txt"
    if not path.exists():
        path.write_text("".join(f"synthetic/v{i:06d}.mp4 {i % C}\n" for i in range(n)))
    return path


def read_speed(store_path: Path, lst: Path) -> dict:
    """GB/s of float16 features delivered as float32 batches of 32 by States.batches: inline
    (a CPU trainer's path) and 2 reads ahead on data.stream.prefetch's 2 threads (a GPU's
    path), each in chunk order and shuffled, after one warm-up pass."""
    out = {}
    with open_store(store_path) as store:
        rows = rows_for_list(store, read_list(lst))
        states = load_states(store, "rgb", rows, load="stream", require_logits=False)
        nbytes = 2 * len(rows) * T * K * D
        for _ in states.batches(torch.arange(len(rows)), 32):
            pass
        for depth in (0, 2):
            for order_name, order in (("chunk order", torch.arange(len(rows))),
                                      ("shuffled", torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)))):
                t0 = time.perf_counter()
                for _ in states.batches(order, 32, depth=depth):
                    pass
                dt = time.perf_counter() - t0
                key = f"{'inline' if depth == 0 else '2 ahead on 2 threads'}, {order_name}"
                out[key] = nbytes / dt / 1e9
                print(f"  {key}: {nbytes / 1e9:.2f} GB in {dt:.2f} s = {out[key]:.2f} GB/s", flush=True)
    return out


def epoch_time(store_path: Path, lst: Path) -> dict:
    """Seconds of one as epoch at its defaults, in memory and streamed (same seed, same weights)."""
    out, weights = {}, {}
    with open_store(store_path) as store:
        rows = rows_for_list(store, read_list(lst))
        for load in ("memory", "stream"):
            states = load_states(store, "rgb", rows, load=load)
            agent = ASAgent(ASConfig(epochs=1), num_classes=C, feature_dim=D, seed=0)
            t0 = time.perf_counter()
            agent.fit(states)
            out[load] = time.perf_counter() - t0
            weights[load] = agent.module.state_dict()
            print(f"  as epoch, {len(rows)} videos, {load}: {out[load]:.1f} s", flush=True)
    same = all(torch.equal(weights["memory"][k], weights["stream"][k]) for k in weights["memory"])
    print(f"  streamed / in memory: {out['stream'] / out['memory']:.3f}; identical weights: {same}")
    return out


def seeds_speed(store_path: Path, lst: Path, n: int) -> dict:
    """Seconds of one as epoch for n seeds apart vs together, at the store's real shapes and
    at tiny ones (planted states, D 64, K 1, hidden 16), with the largest weight difference."""
    from agents.synthetic import planted_states
    from agents.together import fit_together

    with open_store(store_path) as store:
        real = load_states(store, "rgb", rows_for_list(store, read_list(lst)), load="memory")
    tiny = planted_states(V=real.shape[0], T=T, K=1, D=64, C=C, n_key=3, seed=0)
    out = {}
    for name, states, config in (("real shapes", real, ASConfig(epochs=1)),
                                 ("tiny shapes", tiny, ASConfig(epochs=1, hidden=16))):
        V, _, Kx, Dx, Cx = states.shape
        runs = {}
        for how in ("apart", "together"):
            agents = [ASAgent(config, num_classes=Cx, feature_dim=Dx, seed=s) for s in range(n)]
            t0 = time.perf_counter()
            if how == "apart":
                for agent in agents:
                    agent.fit(states)
            else:
                fit_together(agents, states, checkpoint_paths=[None] * n, log_paths=[None] * n)
            runs[how] = (time.perf_counter() - t0, agents)
        diff = max(float((a.module.state_dict()[k] - b.module.state_dict()[k]).abs().max())
                   for a, b in zip(runs["apart"][1], runs["together"][1]) for k in a.module.state_dict())
        (ta, _), (tt, _) = runs["apart"], runs["together"]
        out[name] = (ta, tt)
        print(f"  {name} ({V} videos × {T} × {Kx} × {Dx}, hidden {config.hidden}), {n} seeds, one epoch: "
              f"apart {ta:.1f} s ({n / ta:.3f} seeds/s), together {tt:.1f} s ({n / tt:.3f} seeds/s), "
              f"speed-up {ta / tt:.2f}x; largest weight difference {diff:.1e}", flush=True)
    return out


def precision(store_path: Path, lst: Path, epochs: int) -> dict:
    """float32 vs bfloat16 as: epoch seconds at the store's shapes, and the planted results."""
    from agents.synthetic import planted_states

    with open_store(store_path) as store:
        real = load_states(store, "rgb", rows_for_list(store, read_list(lst)), load="memory")
    out = {}
    for p in ("float32", "bfloat16"):
        agent = ASAgent(ASConfig(epochs=1, precision=p), num_classes=C, feature_dim=D, seed=0)
        t0 = time.perf_counter()
        agent.fit(real)
        out[p] = time.perf_counter() - t0
        print(f"  as epoch, {real.shape[0]} videos at {T} × {K} × {D}, {p}: {out[p]:.1f} s", flush=True)
    print(f"  bfloat16 speed-up: {out['float32'] / out['bfloat16']:.2f}x")
    st = planted_states(V=480, T=25, n_key=3, seed=0)
    train, test = st.subset(np.arange(240)), st.subset(np.arange(240, 480))
    for p in ("float32", "bfloat16"):
        top1, prec = [], []
        for seed in (0, 1, 2):
            agent = ASAgent(ASConfig(epochs=epochs, precision=p), num_classes=8, feature_dim=64, seed=seed)
            agent.fit(train)
            sel = agent.select(test, 4)
            top1.append(float((sel.video_scores.argmax(1) == test.labels).float().mean()))
            hit = agent.score(test).mean(2).topk(5, dim=1).indices
            prec.append(float(st.key_mask[240:].gather(1, hit).float().mean()))
        print(f"  planted, {epochs} epochs, {p}: top-1 at m=4 " + "/".join(f"{x:.3f}" for x in top1)
              + " (mean %.3f), key precision " % np.mean(top1) + "/".join(f"{x:.2f}" for x in prec), flush=True)
    return out


def limited(limit_bytes: int):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def peak_rss(args: list[str], limit_bytes: int, log: Path) -> tuple[int, float, float]:
    """(exit status, peak RSS in GiB, seconds) of ``framesel ARGS`` under the limit."""
    exe = Path(sys.executable).with_name("framesel")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen([str(exe), *args, "--quiet"], stdout=f, stderr=subprocess.STDOUT,
                             preexec_fn=limited(limit_bytes))
        _, status, usage = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024 / GIB, time.perf_counter() - t0


def memory_table(root: Path, store: Path, lists: dict, limit: int,
                 names: tuple = ("head", "train", "evaluate")) -> list[str]:
    """Each command of ``names`` on both lists streamed, and in memory (small: the reference;
    large: must fail under the limit), each a subprocess under the address-space limit."""
    lines = ["| command | list | --load | videos | states as float32 (GiB) | exit | peak RSS (GiB) | s |",
             "|---|---|---|---|---|---|---|---|"]
    ck = root / "as-small-stream.pt"          # evaluate's agent: trained by the first train row

    def command(name: str, size: str, load: str) -> tuple[list[str], Path]:
        train, test = lists[size], lists[f"eval_{size}"]
        if name == "head":      # a seed per run: a recorded head of the same settings would be reused
            seed = ("small", "large").index(size) + 2 * ("stream", "memory").index(load)
            return ["head", str(store), "--train", str(train), "--epochs", "1", "--seed", str(seed)], train
        if name == "train":
            return ["train", str(store), "--agent", "as", "--train", str(train), "--out",
                    str(root / f"as-{size}-{load}.pt"), "--seeds", "1", "--set", "epochs=1",
                    "--set", "batch_size=16"], train
        return ["evaluate", str(store), "--test", str(test), "--agents", str(ck), "--m", "4",
                "--baselines", "uniform,random,max_response", "--out", str(root / f"report-{size}-{load}")], test

    for name in names:
        for size, load in (("small", "stream"), ("large", "stream"), ("small", "memory"), ("large", "memory")):
            args, lst = command(name, size, load)
            n = sum(1 for _ in open(lst))
            code, rss, sec = peak_rss([*args, "--load", load], limit, root / f"{name}-{size}-{load}.log")
            lines.append(f"| {name} | {size} | {load} | {n} | {n * T * K * (D + C) * 4 / GIB:.1f} | {code} | "
                         f"{rss:.2f} | {sec:.0f} |")
            print(lines[-1], flush=True)
    return lines


def evaluate_table(root: Path, store: Path, lists: dict, limit: int) -> list[str]:
    """evaluate's rows of :func:`memory_table` alone, after what they need: the head's logits
    in the store and the ``as`` checkpoint of the small list (each made once, under the limit,
    when the memory section has not made them), then the growth of peak RSS per 1,000 videos."""
    from agents.from_store import head_logits_ok

    with open_store(store) as s:
        ready = head_logits_ok(s, "rgb") and bool(s.logits_written("rgb").all())
    if not ready:
        print("  (writing the head's logits: framesel head on the small list)", flush=True)
        peak_rss(["head", str(store), "--train", str(lists["small"]), "--epochs", "1", "--seed", "0",
                  "--load", "stream"], limit, root / "head-for-evaluate.log")
    if not (root / "as-small-stream.pt").exists():
        print("  (training the as checkpoint on the small list)", flush=True)
        peak_rss(["train", str(store), "--agent", "as", "--train", str(lists["small"]), "--out",
                  str(root / "as-small-stream.pt"), "--seeds", "1", "--set", "epochs=1", "--set", "batch_size=16",
                  "--load", "stream"], limit, root / "train-for-evaluate.log")
    lines = memory_table(root, store, lists, limit, names=("evaluate",))
    cells = [line.split("|") for line in lines[2:4]]          # the small and large rows, --load stream
    (n_small, rss_small), (n_large, rss_large) = [(int(c[4]), float(c[7])) for c in cells]
    grow = rss_large - rss_small
    lines.append(f"evaluate --load stream: {grow:+.2f} GiB peak RSS for {n_large - n_small} more videos "
                 f"({grow / (n_large - n_small) * 1000 * 1024:+.1f} MiB per 1,000)")
    print(lines[-1], flush=True)
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/framesel-stream")
    ap.add_argument("--small", type=int, default=600)
    ap.add_argument("--large", type=int, default=6000)
    ap.add_argument("--eval-small", type=int, default=600)
    ap.add_argument("--eval-large", type=int, default=6000)
    ap.add_argument("--epoch-videos", type=int, default=300)
    ap.add_argument("--limit-gib", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds-n", type=int, default=4)
    ap.add_argument("--seed-videos", type=int, default=40)
    ap.add_argument("--precision-epochs", type=int, default=45)
    ap.add_argument("--only", default="read,memory,epoch,seeds,precision",
                    help="comma list of: read, memory (head, train and evaluate), evaluate (its rows "
                         "alone), epoch, seeds, precision")
    ap.add_argument("--quick", action="store_true", help="200 / 600 videos: a smoke run of the machinery")
    args = ap.parse_args(argv)
    if args.quick:
        args.small, args.large, args.eval_small, args.eval_large, args.epoch_videos = 120, 600, 120, 300, 20
        args.seed_videos, args.precision_epochs = 8, 2
    torch.set_num_threads(args.threads)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    print(f"store: {args.large} videos × {T} × {K} × {D} float16 ({args.large * T * K * D * 2 / GIB:.1f} GiB raw)")
    store = write_store(root, args.large)
    lists = {"small": write_list(root, "small", args.small), "large": write_list(root, "large", args.large),
             "eval_small": write_list(root, "eval_small", args.eval_small),
             "eval_large": write_list(root, "eval_large", args.eval_large),
             "epoch": write_list(root, "epoch", args.epoch_videos),
             "seeds": write_list(root, "seeds", args.seed_videos)}
    only = set(args.only.split(","))
    if "read" in only:
        print("read speed (States.batches, 32 videos a batch):")
        read_speed(store, lists["small"])
    if "memory" in only:
        print(f"peak RSS under ulimit -v {args.limit_gib:g} GiB:")
        for line in memory_table(root, store, lists, int(args.limit_gib * GIB)):
            print(line)
    if "evaluate" in only and "memory" not in only:
        print(f"evaluate's peak RSS under ulimit -v {args.limit_gib:g} GiB:")
        for line in evaluate_table(root, store, lists, int(args.limit_gib * GIB)):
            print(line)
    if "epoch" in only:
        print("epoch time (needs the head's logits in the store: the memory rows write them):")
        epoch_time(store, lists["epoch"])
    if "seeds" in only:
        print(f"{args.seeds_n} seeds apart vs together (needs the head's logits too):")
        seeds_speed(store, lists["seeds"], args.seeds_n)
    if "precision" in only:
        print("mixed precision (as, bfloat16 autocast):")
        precision(store, lists["seeds"], args.precision_epochs)


if __name__ == "__main__":
    main()
