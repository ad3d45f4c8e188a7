"""Extraction as a cluster job array through submitit (``framesel submit``).

Task K of N runs ``run_extraction`` on shard K/N (``extract.run``: rows i with i % N == K-1).
What makes this safe to retry and to run concurrently is the extractor's, not ours:

- concurrent shards share one Zarr store (one chunk per video) or write one HDF5 file each,
  joined here with ``merge_stores`` once every shard has finished;
- a rerun of a shard does only what is not DONE, so a task that *died* (killed, preempted,
  out of memory, lost node: it exited without returning a Summary) is simply submitted again
  and resumes, up to ``max_retries`` times;
- a shard that *finished* with failed videos is not retried: the failures are recorded in
  the store with their causes, and a rerun would fail the same way (``--retry-failed`` on a
  later run is the user's explicit choice). Neither is a task that hit a framesel error
  (bad list, store made with other settings): that is deterministic too.

``--executor local`` runs the tasks as processes on this machine (submitit's LocalExecutor);
tests exercise the whole path with it, kills and retries included.

A plain library: the ``framesel submit`` command (its options, parsing the extract options
after ``--``, echoing) is in ``pipeline/cli.py``.
"""
from __future__ import annotations

import importlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from data.errors import FrameselError, InputError, UnknownNameError
from extract.run import ExtractConfig, Summary, load_list, run_extraction, store_path
from extract.workers import thread_budget

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm")
DEFAULT_TIMEOUT_MIN = 24 * 60   # submitit's own defaults (2 min local, 5 min Slurm) kill real runs
# The options `framesel submit` names, in submitit's Slurm spelling (sbatch's, with underscores).
_SLURM_NAMES = {"gpus_per_task": "gpus_per_task", "cpus_per_task": "cpus_per_task",
                "mem_gb": "mem", "timeout_min": "time", "partition": "partition"}

OnSubmit = Callable[[int, int, object], None]   # (shard k, attempt, submitit Job)


@dataclass
class ShardRun:
    """One shard across its attempts."""
    shard: int                                   # k of n, 1-based
    job_ids: list[str] = field(default_factory=list)  # one per attempt, first attempt first
    summary: dict | None = None                  # the task's Summary (as a dict) once it finished
    error: str | None = None                     # why there is no summary (died too often, ...)

    @property
    def attempts(self) -> int:
        return len(self.job_ids)


@dataclass
class SubmitResult:
    store: str
    folder: str                                  # submitit's log folder (stdout/stderr per task)
    executor: str
    shards: list[ShardRun]
    waited: bool
    merged: dict | None = None                   # merge_stores counts (HDF5 with N > 1)
    jobs: list = field(default_factory=list, repr=False)  # latest submitit Job of each shard

    @property
    def job_ids(self) -> list[str]:
        return [r.job_ids[0] for r in self.shards]

    @property
    def ok(self) -> bool:
        """Every shard finished with every video done (the extract command's exit-0 rule)."""
        return self.waited and all(r.summary is not None and Summary(**r.summary).ok for r in self.shards)

    def text(self) -> str:
        n = len(self.shards)
        lines = [f"{self.store}: {n} shard task(s) on {self.executor}; logs in {self.folder}"]
        for r in self.shards:
            head = f"  shard {r.shard}/{n} (job {', '.join(r.job_ids)})"
            if r.summary is not None:
                lines.append(f"{head}: " + Summary(**r.summary).text().replace("\n", "\n  "))
            elif r.error is not None:
                lines.append(f"{head}: NO SUMMARY: {r.error}")
            else:
                lines.append(f"{head}: submitted")
        if self.merged is not None:
            lines.append(f"merged {self.merged['done']} done and {self.merged['failed']} failed videos "
                         f"into {self.store}")
        return "\n".join(lines)


def run_shard(cfg: ExtractConfig) -> dict:
    """What one array task runs (module level, so submitit pickles it by reference).

    Returns the shard's Summary as a dict, or ``{"error": ...}`` for a framesel error, which
    is deterministic and therefore not worth a retry. Anything else propagates: the task
    fails without a summary and the watcher resubmits it.
    """
    # The task is a fresh process whose log file is all the user sees of it: log at INFO there.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("shard %d/%d of %s into %s", *cfg.shard, cfg.list_path, cfg.out)
    try:
        summary = run_extraction(cfg)
    except FrameselError as err:
        log.error("shard %d/%d: %s", *cfg.shard, err)
        return {"error": f"{type(err).__name__}: {err}"}
    log.info("%s", summary.text())
    return asdict(summary)


def submit_extraction(cfg: ExtractConfig, *, shards: int, executor: str = "local", folder,
                      slurm: Mapping | None = None, wait: bool = True, max_retries: int = 1,
                      on_submit: OnSubmit | None = None, poll_s: float | None = None) -> SubmitResult:
    """Run the extraction of ``cfg`` as ``shards`` tasks through submitit; see the module docstring.

    slurm: ``gpus_per_task, cpus_per_task, mem_gb, timeout_min, partition`` and any further
    SlurmExecutor parameter (``account``, ``qos``, ``array_parallelism``, ...); the local
    executor uses ``timeout_min``, ``gpus_per_task`` and ``cpus_per_task`` (threads per task).
    wait: watch the tasks, resubmit those that die, merge HDF5 shards; else return at once.
    on_submit: called with (shard k, attempt, job) after every submission (for echoing ids).
    """
    options = {k: v for k, v in dict(slurm or {}).items() if v is not None}
    require_submitit()      # before any work, and before the tasks' pickles need it
    _check_request(cfg, shards, executor, max_retries)
    if cfg.shard != (1, 1):
        raise InputError("cfg.shard is set per task by submit; leave it at (1, 1)")
    cfgs = [replace(cfg, shard=(k, shards), threads=_task_threads(cfg, options, executor, shards))
            for k in range(1, shards + 1)]
    ex = make_executor(executor, folder, options, cfg)
    jobs = ex.map_array(run_shard, cfgs)
    runs = [ShardRun(shard=k, job_ids=[job.job_id]) for k, job in enumerate(jobs, 1)]
    for run, job in zip(runs, jobs):
        _notify(on_submit, run, job)
    result = SubmitResult(store=str(cfg.out), folder=str(folder), executor=executor, shards=runs,
                          waited=wait, jobs=list(jobs))
    if not wait:
        return result
    poll = poll_s if poll_s is not None else (0.5 if executor == "local" else 30.0)
    _watch(ex, result, cfgs, max_retries=max_retries, poll_s=poll, on_submit=on_submit)
    if is_sharded_hdf5(cfg, shards) and all(r.summary is not None for r in runs):
        result.merged = _merge_hdf5(cfg, shards)
    return result


def _check_request(cfg: ExtractConfig, shards: int, executor: str, max_retries: int) -> None:
    """Fail here, once, rather than in every task of the array."""
    from extract.run import check_root, check_settings

    if executor not in EXECUTORS:
        raise UnknownNameError("executor", executor, EXECUTORS)
    if not isinstance(shards, int) or shards < 1:
        raise InputError(f"--shards must be an integer >= 1, got {shards!r}")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise InputError(f"--max-retries must be an integer >= 0, got {max_retries!r}")
    check_settings(cfg)
    videos = load_list(cfg)
    check_root(cfg, videos)
    if shards > len(videos.paths):
        log.warning("%d shards for %d videos: %d tasks will have nothing to do",
                    shards, len(videos.paths), shards - len(videos.paths))


def _task_threads(cfg: ExtractConfig, options: Mapping, executor: str, shards: int) -> int:
    """Threads per worker of a task: N local tasks share this machine's cores; a Slurm task
    owns its --cpus-per-task (os.cpu_count() there would count the whole node); local tasks share
    this process's thread budget (extract/workers.py: thread_budget)."""
    if cfg.threads:
        return cfg.threads
    workers = max(1, cfg.workers)
    if options.get("cpus_per_task"):
        return max(1, int(options["cpus_per_task"]) // workers)
    if executor == "local":
        cores = thread_budget()
        return max(1, cores // (min(shards, cores) * workers))
    return 0


def require_submitit():
    """The submitit module, or an InputError that says how to install it."""
    try:
        return importlib.import_module("submitit")
    except ImportError:
        raise InputError("framesel submit needs submitit, which is not installed: "
                         "pip install 'framesel[cluster]'") from None


def make_executor(kind: str, folder, options: Mapping, cfg: ExtractConfig):
    """A submitit executor with ``options`` passed through ``update_parameters``."""
    submitit = require_submitit()

    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(**local_parameters(options, cfg))
        return ex
    if kind != "slurm":
        raise UnknownNameError("executor", kind, EXECUTORS)
    if shutil.which("srun") is None:
        raise InputError("--executor slurm needs a Slurm cluster, but `srun` is not on PATH "
                         "(use --executor local to run the shards on this machine)")
    ex = submitit.SlurmExecutor(folder=str(folder))
    try:
        ex.update_parameters(**slurm_parameters(options))
    except ValueError as err:   # submitit lists the parameters it knows
        raise InputError(f"bad Slurm option: {err}") from err
    return ex


def slurm_parameters(options: Mapping) -> dict:
    """``framesel submit``'s names → SlurmExecutor parameters (others pass through as given)."""
    params = {"job_name": "framesel-extract", "time": DEFAULT_TIMEOUT_MIN}
    for name, value in options.items():
        if value is not None:
            params[_SLURM_NAMES.get(name, name)] = value
    if "mem" in params and not isinstance(params["mem"], str):
        gb = float(params["mem"])
        params["mem"] = f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"
    params["time"] = int(params["time"])
    return params


def local_parameters(options: Mapping, cfg: ExtractConfig) -> dict:
    """LocalExecutor parameters. It hides every GPU unless asked (CUDA_VISIBLE_DEVICES="")."""
    gpus = options.get("gpus_per_task")
    if gpus is None:
        gpus = 1 if cfg.device == "cuda" else 0
    ignored = sorted(set(options) - {"timeout_min", "gpus_per_task", "cpus_per_task"})
    if ignored:
        log.info("the local executor ignores %s", ", ".join(ignored))
    return {"timeout_min": int(options.get("timeout_min") or DEFAULT_TIMEOUT_MIN), "gpus_per_node": int(gpus)}


def _notify(on_submit: OnSubmit | None, run: ShardRun, job) -> None:
    log.info("shard %d: job %s (attempt %d)", run.shard, job.job_id, run.attempts)
    if on_submit is not None:
        on_submit(run.shard, run.attempts, job)


def _watch(ex, result: SubmitResult, cfgs: Sequence[ExtractConfig], *, max_retries: int,
           poll_s: float, on_submit: OnSubmit | None) -> None:
    """Poll until every shard has a summary or has died ``max_retries + 1`` times."""
    local = result.executor == "local"
    pending = {r.shard: job for r, job in zip(result.shards, result.jobs)}
    while pending:
        time.sleep(poll_s)
        for k, job in list(pending.items()):
            if not job.done():
                continue
            run = result.shards[k - 1]
            summary, error, retry = _outcome(job, local)
            if retry and run.attempts <= max_retries:
                log.warning("shard %d/%d: %s; resubmitting (attempt %d of %d)",
                            k, len(cfgs), error, run.attempts + 1, max_retries + 1)
                job = pending[k] = result.jobs[k - 1] = ex.submit(run_shard, cfgs[k - 1])
                run.job_ids.append(job.job_id)
                _notify(on_submit, run, job)
                continue
            run.summary, run.error = summary, error
            del pending[k]


def _outcome(job, local: bool) -> tuple[dict | None, str | None, bool]:
    """(summary, error, retry) of a finished job."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    # A local task writes its result before it exits, so a missing one means it died; asking
    # submitit would first wait 15 s for a slow cluster file system to show it.
    if local and not job.paths.result_pickle.exists():
        return None, f"task died without a summary (killed?); log {job.paths.stderr}", True
    try:
        value = job.result()
    except FailedJobError as err:      # an exception escaped run_extraction: worth a retry
        return None, f"task raised {_exception_line(str(err))}; log {job.paths.stderr}", True
    except UncompletedJobError:
        return None, f"task died without a summary (state {job.state}); log {job.paths.stderr}", True
    if "error" in value:
        return None, value["error"], False
    return value, None, False


def _exception_line(message: str) -> str:
    """The ``Type: message`` line of the traceback that submitit frames with dashed lines."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    dashes = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    if len(dashes) >= 2 and dashes[1] > dashes[0] + 1:
        return lines[dashes[1] - 1]
    return lines[-1] if lines else "an exception"


def is_sharded_hdf5(cfg: ExtractConfig, shards: int) -> bool:
    return shards > 1 and store_path(replace(cfg, shard=(1, shards))) != Path(cfg.out)


def shard_paths(cfg: ExtractConfig, shards: int) -> list[Path]:
    """The store each of the ``shards`` tasks writes (one per shard for HDF5, else cfg.out)."""
    return [store_path(replace(cfg, shard=(k, shards))) for k in range(1, shards + 1)]


def _merge_hdf5(cfg: ExtractConfig, shards: int) -> dict:
    from data.store_merge import merge_stores

    parts = shard_paths(cfg, shards)
    counts = merge_stores([p for p in parts if p.exists()], cfg.out)
    log.info("merged %s into %s; the shard files stay (a rerun resumes from them)", counts, cfg.out)
    return counts
