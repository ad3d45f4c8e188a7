"""``framesel demo``: the whole pipeline on the embedded demo dataset, in minutes on a CPU.

generate videos → extract (decode, TV-L1, EfficientNet-Lite0 on RGB and flow) → head →
train every agent, three training seeds each, each agent with its own classifier together
with its paper's no-selection partner (tattn_noatt, rtsae_nogate, glimpse_soft,
dsn_nosampler; agents/papers.py) at the same seeds → evaluate → report (the answer table
first). Everything lands under one directory.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from agents.head import HeadConfig
from agents.stage import HeadStageConfig, TrainStageConfig, run_head, run_train_seeds, train_outputs
from data.demo import DemoConfig, make_demo_dataset
from data.progress import show_progress
from evaluate.protocols import ProtocolConfig
from evaluate.run import EvaluateConfig, run_evaluate
from extract.flow import FlowConfig
from extract.run import ExtractConfig, run_extraction
from extract.video import VideoSettings

log = logging.getLogger(__name__)

# The demo has a few dozen training videos, not UCF101's 9,537: the papers' learning rates
# (e.g. 1e-5 for `as`) would not move in the few hundred steps the demo can afford, so each
# agent gets a rate and epoch count sized for it. The report records these overrides.
DEMO_AGENTS: dict[str, tuple[tuple[str, object], ...]] = {
    # as: the paper's per-video updates (default batch_size 1); m = 4 of T = 8 is 000's m/T (12/25).
    # 40 videos x 15 epochs = 600 updates (UCF101 gives ~190k before the first decay), so lr x10.
    "as": (("m", 4), ("lr", 1e-4), ("epochs", 15), ("lr_milestones", (10, 14))),
    "dsn": (("epochs", 40), ("batch_size", 16), ("milestones", (30, 38))),
    "tattn": (("epochs", 30), ("hidden", 128), ("layers", 1), ("iterations", 10), ("test_last", 5), ("batch_size", 16)),
    "rtsae": (("pretrain_epochs", 10), ("epochs", 40), ("batch_size", 16)),
    "glimpse": (("epochs", 15), ("batch_size", 16)),
}
# Each agent's partner is trained in the same call with the overrides its Config shares
# (agents/stage.py partner_config): tattn_noatt as tattn, rtsae_nogate with rtsae's epochs and batch.

# Demo extraction: the papers' pipeline at a laptop's scale. T = 8 positions over ~4 s
# clips, L = 2 flow pairs, 1 centre crop, TV-L1 with a looser stopping threshold (epsilon
# 0.05: ~6-10x faster than the default 0.01 at ~0.3 px mean difference, GUIDE §7).
DEMO_SETTINGS = VideoSettings(frames=8, flow_stack=2, crops=1, feature_maps=True,
                              flow=FlowConfig(algorithm="tvl1", params=(("epsilon", 0.05),)))


@dataclass(frozen=True)
class DemoRunConfig:
    out: str = "framesel-demo"
    data: DemoConfig = field(default_factory=DemoConfig)
    settings: VideoSettings = DEMO_SETTINGS
    agents: tuple[str, ...] = ("as", "dsn", "tattn", "rtsae", "glimpse")   # and their partners
    overrides: dict = field(default_factory=lambda: dict(DEMO_AGENTS))
    ms: tuple[int, ...] = (1, 2, 3, 4, 8)
    workers: int = 1
    seed: int = 0
    seeds: int = 3            # training seeds per agent (GUIDE §4: >= 3): mean ± std and the seed rule
    quiet: bool = False
    command: str = "framesel demo"


def run_demo(cfg: DemoRunConfig, echo=print) -> dict:
    """Run every stage; returns {"report": path, "seconds": {stage: s}, "store": path}."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    times, t0 = {}, time.perf_counter()

    def stage(name):
        times[name] = round(time.perf_counter() - t0 - sum(times.values()), 1)
        echo(f"[{sum(times.values()):6.1f} s] {name} done ({times[name]} s)")

    ds = make_demo_dataset(out / "data", cfg.data, progress=show_progress(cfg.quiet))
    data_dir = out / "data"
    all_list = data_dir / "all.txt"
    all_list.write_text((data_dir / "train.txt").read_text() + (data_dir / "test.txt").read_text())
    stage("dataset")
    store = str(out / "demo.zarr")
    summary = run_extraction(ExtractConfig(list_path=str(all_list), out=store, root=str(data_dir),
                                           classes_file=str(data_dir / "classes.txt"), settings=cfg.settings,
                                           workers=cfg.workers, quiet=cfg.quiet, command=cfg.command))
    echo(summary.text())
    stage("extract")
    run_head(HeadStageConfig(store=store, train_list=str(data_dir / "train.txt"),
                             head=HeadConfig(epochs=60, seed=cfg.seed), quiet=cfg.quiet, command=cfg.command))
    stage("head")
    checkpoints = train_agents(store, data_dir / "train.txt", out / "agents", cfg.agents, cfg.overrides,
                               cfg.settings.streams, seed=cfg.seed, seeds=cfg.seeds, quiet=cfg.quiet,
                               command=cfg.command, stage=stage)
    paths = run_evaluate(EvaluateConfig(store=store, test_lists=(str(data_dir / "test.txt"),),
                                        out=str(out / "report"), agents=tuple(checkpoints),
                                        protocol=ProtocolConfig(ms=cfg.ms, seed=cfg.seed),
                                        quiet=cfg.quiet, command=cfg.command))
    stage("evaluate")
    (out / "timings.json").write_text(json.dumps({"seconds": times, "videos": ds.get("num_videos")}, indent=1))
    return {"report": str(paths["html"]), "seconds": times, "store": store, "ok": summary.ok}


def train_agents(store, train_list, agent_dir, agents, overrides, streams, *, seed=0, seeds=1, quiet=False,
                 command="", stage=lambda name: None, fresh=True, partner=True) -> list[str]:
    """Train each agent on each stream, ``seeds`` training seeds each (``NAME-STREAM.pt``, or
    ``NAME-STREAM-seedS.pt`` with several) and, with ``partner``, its paper's partner at
    those seeds (``NAME-STREAM.partner-P[-seedS].pt``), as ``framesel train`` does; returns
    the checkpoint paths. ``fresh``: start over (earlier checkpoints at those paths go); else
    a finished checkpoint of the same config is kept and an unfinished one resumed."""
    checkpoints = []
    for name in agents:
        for stream in streams:
            cfg = TrainStageConfig(store=store, agent=name, train_list=str(train_list),
                                   out=str(Path(agent_dir) / f"{name}-{stream}.pt"), stream=stream,
                                   overrides=tuple(overrides.get(name, ())), seed=seed, quiet=quiet, command=command)
            paths = train_outputs(cfg, seeds, partner)
            for old in (p for ck in paths for p in (ck, ck.with_suffix(".jsonl")) if fresh):
                old.unlink(missing_ok=True)      # a fresh run, not a resume of an older one
            run_train_seeds(cfg, seeds, partner=partner)
            checkpoints += [str(p) for p in paths]
        stage(f"train {name}")
    return checkpoints


__all__ = ["DemoRunConfig", "run_demo", "train_agents", "DEMO_AGENTS", "DEMO_SETTINGS"]
