"""The ``framesel`` command: thin click commands that build a config and call one library
function (GUIDE §1, §6.10). Domain errors become ClickException at this edge.

Module-level imports stay light (click, the standard library, ``data.errors``): each command
imports its library when it runs, so ``framesel info`` and ``check`` load neither torch
nor OpenCV (tests/test_cli.py checks it in a fresh interpreter).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from pipeline import cli_files, cli_registry
from pipeline.edge import command_line, device_option, domain_errors, load_option, quiet_option, shard_option
from pipeline.options import (AgentPaths, RegistryChoice, SpreadCommand, agent_names, backbones, checkpoints, flatten,
                              flow_names, fusion_weights, int_list, slurm_extra)
from pipeline.predict_cli import predict_command


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="framesel")
def main(verbose):
    """framesel: which frames of a video matter.

    Extract two-stream backbone features once (extract), then train and evaluate
    frame-selection agents on them (head, train, evaluate). `framesel demo` runs it all.
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from data.errors import InputError
    from data.plugins import load_plugins

    try:
        load_plugins()        # FRAMESEL_PLUGINS (data/plugins.py): a broken one is named before any work
    except InputError as err:
        raise click.ClickException(str(err)) from None


@main.command()
@click.argument("list_path", metavar="LIST", type=click.Path(exists=True))
@click.option("--root", default=".", type=click.Path(exists=True, file_okay=False),
              help="Directory the list's paths are relative to.")
@click.option("--out", required=True, type=click.Path(), help="Store to write: DIR.zarr or FILE.h5.")
@click.option("--format", "fmt", type=click.Choice(["zarr", "hdf5"]), default=None,
              help="Store format (default: from the suffix of --out; zarr otherwise).")
@click.option("--list-format", default="auto", type=click.Choice(["auto", "mmaction2", "ucf101", "hmdb51", "folder"]))
@click.option("--hmdb51-split", default=1, show_default=True, help="With --list-format hmdb51: split k.")
@click.option("--hmdb51-subset", default="test", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--classes", "classes_file", type=click.Path(exists=True), help="Class names, one a line (0-based).")
@click.option("--frames", default=25, show_default=True, help="T positions per video (TSN segments).")
@click.option("--flow-stack", default=5, show_default=True, help="L flow pairs per position.")
@click.option("--flow", "flow_algo", default=None,
              type=RegistryChoice(flow_names, extra=("auto", "none")),
              help="TV-L1 backends: tvl1 (OpenCV, CPU), tvl1-torch (batched, GPU or CPU), tvl1-cuda "
                   "(needs OpenCV built with CUDA); auto: tvl1-cuda, else tvl1-torch on a GPU, else tvl1. "
                   "[default: tvl1; auto with --device cuda, said on stderr]")
@click.option("--flow-param", multiple=True, metavar="NAME=VALUE", help="Override a flow parameter, e.g. epsilon=0.05.")
@click.option("--quantize-flow/--no-quantize-flow", default=False, help="Map flow to uint8 like TSN's JPEGs.")
@click.option("--crops", default=10, show_default=True, type=click.Choice(["1", "3", "10"]), help="Crops per position.")
@click.option("--backbone", "backbone", multiple=True, callback=backbones, metavar="[STREAM=]NAME",
              help="Backbone of every stream (default efficientnet_lite0), or of one (flow=resnet50): an "
                   "image tower (clip_vit_b16, siglip_b16, dinov2_b14, …) takes RGB only.")
@click.option("--checkpoint", multiple=True, callback=checkpoints, metavar="[STREAM=]PATH",
              help="Your weights for a stream (.pth/.pt/.safetensors: mmaction2, TSN/TSM-pytorch, caffe "
                   "BN-Inception, torchvision or framesel files; an image tower's model.safetensors or its "
                   "folder, or an OpenCLIP file; the layout is detected from the keys); plain PATH means rgb. "
                   "The first '=' after a stream name ends it, so PATH may hold '='.")
@click.option("--preset", default=None, metavar="NAME",
              help="Input scaling of both streams (framesel, mmaction2, tsn_pytorch, caffe_bgr, imagenet, clip, "
                   "siglip); default: the one the checkpoint's layout implies.")
@click.option("--streams", default="rgb,flow", show_default=True)
@click.option("--feature-maps/--no-feature-maps", default=False, help="Also store conv maps (glimpse agent).")
@click.option("--thumbnails/--no-thumbnails", default=True, help="Store small frames for reports.")
@click.option("--shard", default="1/1", callback=shard_option, help="Process shard K of N (array jobs).")
@click.option("--workers", default=1, show_default=True, help="Processes on this machine.")
@click.option("--pipeline/--whole-videos", "pipeline", default=None,
              help="With --workers > 1: the workers decode ahead of this process, which runs flow and both "
                   "backbones on --device with one copy of the models (default with --device cuda); or each "
                   "worker extracts whole videos with its own models on 1/W of the cores (default on a CPU).")
@click.option("--device", default="cpu", type=click.Choice(["cpu", "cuda"]))
@click.option("--batch-size", default=16, show_default=True)
@click.option("--retry-failed", is_flag=True, help="Try videos that failed before again.")
@quiet_option
@domain_errors
def extract(**params):
    """Decode, sample, compute flow and run the frozen backbone for every video of LIST."""
    from extract.run import run_extraction
    from pipeline.config import extract_config

    summary = run_extraction(extract_config(params, command_line()))
    click.echo(summary.text(), err=not summary.ok)
    if not summary.ok:
        sys.exit(1)


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def info(store_path, as_json):
    """Summarise a store: videos done/failed/pending, streams, shapes, settings."""
    from data.inspect import format_summary, summarize
    from data.store import open_store

    with open_store(store_path) as store:
        summary = summarize(store)
    click.echo(json.dumps(summary, indent=2, default=str) if as_json else format_summary(summary))


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True))
@domain_errors
def check(store_path):
    """Validate a store (schema, shapes, counts, NaNs); exit 1 if anything is wrong."""
    from data.inspect import check_store
    from data.store import open_store

    with open_store(store_path) as store:
        problems = check_store(store)
    for p in problems:
        click.echo(f"PROBLEM {p}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{store_path}: OK")


@main.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(), help="The merged HDF5 store.")
@domain_errors
def merge(shards, out):
    """Join the per-shard HDF5 files of an array job into one store."""
    from data.store_merge import merge_stores

    counts = merge_stores(shards, out)
    click.echo(f"{out}: merged {counts['done']} done and {counts['failed']} failed videos "
               f"from {len(shards)} shard files")


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True))
@click.option("--train", "train_list", required=True, type=click.Path(exists=True), help="Training videos (a list).")
@click.option("--streams", default="", help="Comma-separated streams (default: all).")
@click.option("--hidden", default=0, show_default=True, help="Hidden units (0 = linear head, as TSN).")
@click.option("--epochs", default=30, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--truth", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Segment truth of the training videos (truth.json of untrimmed composites): train each "
                   "position on its segment's class instead of the video's label.")
@device_option("Where the head trains and writes the logits.")
@load_option
@quiet_option
@domain_errors
def head(store_path, train_list, streams, hidden, epochs, lr, seed, truth, device, load, quiet):
    """Train the classifier CL on cached features and write per-frame logits into STORE."""
    from agents.head import HeadConfig
    from agents.head_stage import HeadStageConfig, run_head

    cfg = HeadStageConfig(store=store_path, train_list=train_list,
                          streams=tuple(s for s in streams.split(",") if s),
                          head=HeadConfig(hidden=hidden, epochs=epochs, lr=lr, seed=seed),
                          device=device, load=load, quiet=quiet, command=command_line(), truth=truth)
    for stream, prov in run_head(cfg).items():
        click.echo(f"{stream}: head trained on {prov['num_train']} videos, train accuracy "
                   f"{prov['final_train_accuracy']:.3f}" + (" per position" if prov.get("labels") == "per position" else "")
                   + f"; logits written to {store_path}")


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True))
@click.option("--agent", "agent_name", required=True, type=RegistryChoice(agent_names),
              help="A registered agent (its paper's partner trains beside it), or a partner alone.")
@click.option("--train", "train_list", required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(), help="Checkpoint to write (resumed if present).")
@click.option("--stream", default="rgb", show_default=True)
@click.option("--observer", default=None, help="dsn: the cheap stream its observer reads.")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Override an agent option (default: the paper's), e.g. --set epochs=10.")
@click.option("--seed", default=0, show_default=True)
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Train N seeds (--seed, --seed+1, ...), each saved as OUT-seedS.pt beside --out "
                   "(N = 1: --out itself); evaluate reports them as one method, mean ± std over seeds.")
@click.option("--partner/--no-partner", default=True, show_default=True,
              help="Also train the agent's paper's no-selection partner (tattn: tattn_noatt, rtsae: "
                   "rtsae_nogate, glimpse: glimpse_soft, dsn: dsn_nosampler) at the same seeds, saved as "
                   "OUT.partner-NAME[-seedS].pt; evaluate pairs them (vs_partner_*).")
@click.option("--together/--apart", default=False, show_default=True,
              help="--seeds N: train the N seeds in one batched pass (as), or one after another. "
                   "Meant for GPUs (not yet measured there); on a CPU it is slower.")
@device_option("Where the agent trains (streamed states are read ahead through pinned memory).")
@load_option
@quiet_option
@domain_errors
def train(store_path, agent_name, train_list, out, stream, observer, overrides, seed, seeds, together, partner,
          device, load, quiet):
    """Train a selection agent on the cached states of STORE (and its paper's partner)."""
    from agents.train_stage import TrainStageConfig, run_train_seeds
    from pipeline.config import parse_assignments

    cfg = TrainStageConfig(store=store_path, agent=agent_name, train_list=train_list, out=out,
                           stream=stream, observer=observer,
                           overrides=parse_assignments(overrides, "--set", underscores=True),
                           seed=seed, device=device, load=load, quiet=quiet, command=command_line())
    agents = run_train_seeds(cfg, seeds, together, partner)
    for agent in agents:
        path = agent.checkpoint_path
        if agent.epochs_before == len(agent.history):
            click.echo(f"{path} is already trained for {agent.epochs_before} epochs; nothing to do")
            continue
        last = agent.history[-1] if agent.history else {}
        click.echo(f"{agent.name} ({stream}, seed {agent.seed}) trained: {len(agent.history)} epochs, last "
                   + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float)) + f"; saved {path}")
    partners = sorted({a.name for a in agents} - {agent_name})
    click.echo(f"{agent_name}: {seeds} seed(s)" + (f", with its paper's partner {', '.join(partners)}" if partners
                                                   else ", no partner trained") + f" ({len(agents)} checkpoints)")


@main.command(cls=SpreadCommand, spread=("--agents",))
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True))
@click.option("--test", "test_lists", required=True, multiple=True, type=click.Path(exists=True),
              help="Test videos; repeat for several splits (mean ± std is reported).")
@click.option("--agents", "agent_paths", multiple=True, type=AgentPaths(exists=True, dir_okay=False),
              callback=flatten, metavar="PATH...",
              help="Agent checkpoints: several after one --agents (up to the next option), --agents "
                   "repeated, or a quoted glob such as 'agents/*.pt'. Checkpoints that differ only in "
                   "their training seed (train --seeds) are one method: mean ± std over the seeds.")
@click.option("--out", required=True, type=click.Path(), help="Report directory.")
@click.option("--m", "ms", default=None, callback=int_list, metavar="M,M,...",
              help="Frame budgets m, each at most T (m = T keeps all) [default: 4,8,12,16,20,25, "
                   "those above T evaluated as T].")
@click.option("--baselines", default="", help="Comma-separated baselines (default: all).")
@click.option("--streams", default="", help="Comma-separated streams (default: all with logits).")
@click.option("--fusion", multiple=True, callback=fusion_weights, metavar="rgb=W,flow=W",
              help="Two-stream fusion weights on scores before softmax (default: 1:1.5 as TSN, and 1/3:2/3).")
@click.option("--seed", default=0, show_default=True)
@click.option("--truth", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Segment truth of the test videos (truth.json of untrimmed composites): key precision and "
                   "recall per row, the key_oracle baseline, cluster-bootstrap intervals over source clips, the "
                   "head's per-position AUC.")
@device_option("Where the selections run (the agents' networks, a block of test videos at a time).")
@click.option("--per-video", is_flag=True, help="Also write per_video.csv (select_classify: kept frames, class, score).")
@load_option
@quiet_option
@domain_errors
def evaluate(store_path, test_lists, agent_paths, out, ms, baselines, streams, fusion, seed, truth, device, load,
             quiet, per_video):
    """Run the papers' protocols on STORE with the given agents and write a report."""
    from evaluate.protocols import ProtocolConfig
    from evaluate.run import EvaluateConfig, run_evaluate

    proto = {"seed": seed, "device": device}
    if ms:
        proto["ms"] = ms
    if fusion:
        proto["fusion"] = fusion
    cfg = EvaluateConfig(store=store_path, test_lists=test_lists, out=out, agents=agent_paths,
                         baselines=tuple(b for b in baselines.split(",") if b),
                         streams=tuple(s for s in streams.split(",") if s),
                         protocol=ProtocolConfig(**proto), clamp_m=not ms, load=load, quiet=quiet,
                         per_video=per_video, command=command_line(), truth=truth)
    paths = run_evaluate(cfg)
    click.echo(f"report: {paths.get('html', paths)}")
    for f in paths.get("failed", ()):
        click.echo(f"FAILED {f['method']} ({f['stream']}, split {f['split']}): {f['cause']}", err=True)
    if paths.get("failed"):
        click.echo(f"{len(paths['failed'])} method(s) failed; the report holds every other row", err=True)
        sys.exit(1)


@main.command()
@click.option("--out", default="framesel-demo", show_default=True, type=click.Path(), help="Where everything goes.")
@click.option("--workers", default=1, show_default=True, help="Extraction processes.")
@quiet_option
@domain_errors
def demo(out, workers, quiet):
    """The whole pipeline on the embedded demo dataset: videos → extract → head → train every
    agent → evaluate → report."""
    from pipeline.demo import DemoRunConfig, run_demo

    result = run_demo(DemoRunConfig(out=out, workers=workers, quiet=quiet, command=command_line()),
                      echo=click.echo)
    click.echo(f"demo finished in {sum(result['seconds'].values()):.0f} s; report: {result['report']}")
    if not result["ok"]:
        sys.exit(1)


# pipeline.submit.EXECUTORS, spelled here because importing pipeline.submit loads torch and
# OpenCV (tests/test_cli.py checks the two agree)
EXECUTORS = ("local", "slurm")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--shards", default=1, show_default=True, type=click.IntRange(min=1),
              help="N array tasks; task K extracts shard K/N.")
@click.option("--executor", "executor_kind", default="slurm", show_default=True, type=click.Choice(EXECUTORS),
              help="slurm: a job array; local: N processes on this machine.")
@click.option("--folder", type=click.Path(file_okay=False), default=None,
              help="Log folder (default: STORE.submitit beside the store).")
@click.option("--gpus-per-task", type=click.IntRange(min=0), default=None,
              help="GPUs per task (local: visible GPUs; default 1 with --device cuda, else 0).")
@click.option("--cpus-per-task", type=click.IntRange(min=1), default=None, help="Also the threads per task.")
@click.option("--mem-gb", type=click.FloatRange(min=0, min_open=True), default=None, help="Memory per task (Slurm).")
@click.option("--timeout-min", type=click.IntRange(min=1), default=None,
              help="Wall time per task [default: 1440, a day]; a task killed at its limit is "
                   "resubmitted and resumes.")
@click.option("--partition", default=None, help="Slurm partition.")
@click.option("--slurm-param", multiple=True, callback=slurm_extra, metavar="NAME=VALUE",
              help="Any other SlurmExecutor parameter, e.g. account=abc, qos=high, array_parallelism=32.")
@click.option("--wait/--detach", default=True, show_default=True,
              help="Watch the tasks (retry, merge, summary) or return once submitted.")
@click.option("--max-retries", default=1, show_default=True, type=click.IntRange(min=0),
              help="Resubmissions of a task that dies without a summary (it resumes).")
@click.argument("extract_args", nargs=-1, type=click.UNPROCESSED,
                metavar="-- LIST --root DIR --out STORE [EXTRACT OPTIONS]")
@domain_errors
def submit(shards, executor_kind, folder, gpus_per_task, cpus_per_task, mem_gb, timeout_min, partition,
           slurm_param, wait, max_retries, extract_args):
    """Run `framesel extract` as N cluster tasks (one per shard) through submitit.

    Everything after the submit options is what `framesel extract` takes (without --shard;
    --quiet there silences the tasks' progress bars in their logs). Tasks that die are
    resubmitted and resume; failed videos are recorded, not retried.
    """
    from pipeline.submit import require_submitit

    require_submitit()
    options = {"gpus_per_task": gpus_per_task, "cpus_per_task": cpus_per_task, "mem_gb": mem_gb,
               "timeout_min": timeout_min, "partition": partition, **slurm_param}
    cfg = parse_extract_args(extract_args, command_line())
    if not _submit_and_report(cfg, shards, executor_kind, folder, options, wait, max_retries):
        sys.exit(1)


def parse_extract_args(args, command: str = ""):
    """The ExtractConfig that ``framesel extract ARGS`` would run, parsed by the extract
    command itself (same options, defaults and validation). ``--shard`` is refused."""
    from click.core import ParameterSource

    from pipeline.config import extract_config

    ctx = extract.make_context("framesel submit ... --", list(args))
    if ctx.get_parameter_source("shard") is not ParameterSource.DEFAULT:
        raise click.UsageError("--shard is set per task by submit: use --shards N")
    return extract_config({**ctx.params, "shard": (1, 1)}, command)


def _submit_and_report(cfg, shards, executor_kind, folder, options, wait, max_retries) -> bool:
    from pipeline.submit import is_sharded_hdf5, shard_paths, submit_extraction

    folder = Path(folder) if folder else Path(f"{cfg.out}.submitit")
    click.echo(f"logs: {folder}")

    def echo(k, attempt, job):
        again = f" (attempt {attempt})" if attempt > 1 else ""
        click.echo(f"shard {k}/{shards}: job {job.job_id}{again}")

    result = submit_extraction(cfg, shards=shards, executor=executor_kind, folder=folder, slurm=options,
                               wait=wait, max_retries=max_retries, on_submit=echo)
    if wait:
        click.echo(result.text(), err=not result.ok)
        return result.ok
    click.echo(f"submitted {shards} task(s): {' '.join(result.job_ids)}; logs in {folder}")
    if is_sharded_hdf5(cfg, shards):
        parts = shard_paths(cfg, shards)
        click.echo(f"`framesel info {parts[0]}` (one per shard) shows progress; when all have "
                   f"finished: framesel merge {' '.join(map(str, parts))} --out {cfg.out}")
    else:
        click.echo(f"`framesel info {cfg.out}` shows progress")
    return True


main.add_command(cli_files.import_command)
main.add_command(cli_files.export_command)
for _command in cli_registry.REGISTRY_COMMANDS:
    main.add_command(_command)
main.add_command(predict_command(domain_errors, quiet_option, device_option, command_line))


if __name__ == "__main__":  # pragma: no cover
    main()
