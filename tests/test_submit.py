"""framesel submit for real: submitit's LocalExecutor runs one process per shard on real tiny
videos; a task is SIGKILLed mid-shard and the retry logic resubmits it; the stores end equal to
a one-process run_extraction. Slurm itself is absent here: its options are checked through
submitit's own sbatch writer."""
import os
import signal
import threading
import time
from dataclasses import replace

import pytest
from click.testing import CliRunner

from data.errors import InputError, UnknownNameError
from data.store import DONE, PENDING, compare_stores, open_store
from extract.run import run_extraction
from pipeline.cli import parse_extract_args as extract_config, submit
from pipeline.submit import (DEFAULT_TIMEOUT_MIN, local_parameters, make_executor, slurm_parameters,
                             submit_extraction)
from conftest import TINY

# Fast but real settings (as tests/test_extract_run.py): 4 positions, 2 flow pairs, 1 crop, Farneback,
# the tiny random backbone (tests/conftest.py: TINY).
FAST = [*TINY, "--frames", "4", "--flow-stack", "2", "--crops", "1", "--flow", "farneback", "--quiet"]


def _args(video_dir, out, list_name="list.txt"):
    return [str(video_dir / list_name), "--root", str(video_dir / "videos"), "--out", str(out), *FAST]


def _reference(cfg, out):
    """The same list in one process, one thread (as each local task of these tests)."""
    run_extraction(replace(cfg, out=str(out), threads=1))
    return out


def _long_list(video_dir, n):
    from conftest import moving_texture, write_video

    lines = []
    for k in range(n):
        write_video(video_dir / "videos" / "left" / f"long{k}.mp4", moving_texture(16, shift=(1, k % 3), seed=10 + k))
        lines.append(f"left/long{k}.mp4 0")
    (video_dir / "long.txt").write_text("\n".join(lines) + "\n")


def _task_pids(controller_pid: int) -> list[int]:
    """The LocalExecutor job id is its controller's pid; the task runs as the controller's child."""
    children = f"/proc/{controller_pid}/task/{controller_pid}/children"
    if not os.path.exists(children):
        pytest.skip("needs Linux /proc/PID/task/PID/children to find the task process")
    with open(children) as f:
        return [int(p) for p in f.read().split()]


def _kill_after_first_done(store, rows, jobs, deadline=240):
    """SIGKILL shard 1's task once the store shows >= 1 of its rows done; returns that status."""
    end = time.time() + deadline
    while time.time() < end:
        time.sleep(0.05)
        if (1, 1) not in jobs or not store.exists():
            continue
        with open_store(store) as s:
            status = s.status()[rows]
        if (status == DONE).sum() >= 1:
            for pid in _task_pids(int(jobs[(1, 1)].job_id)):
                os.kill(pid, signal.SIGKILL)
            return status
    pytest.fail("shard 1 never wrote a video")


def test_killed_task_is_resubmitted_resumes_and_matches_one_process(video_dir):
    _long_list(video_dir, 10)      # shard 1 of 2 holds rows 0, 2, ..., 8
    shared = video_dir / "shared.zarr"
    cfg = extract_config(_args(video_dir, shared, "long.txt"))
    jobs, box = {}, {}

    def run():
        try:
            box["result"] = submit_extraction(cfg, shards=2, executor="local", folder=video_dir / "logs",
                                              max_retries=1, poll_s=0.2,
                                              on_submit=lambda k, a, job: jobs.__setitem__((k, a), job))
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread below
            box["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    at_kill = _kill_after_first_done(shared, slice(0, None, 2), jobs)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in box, box.get("error")
    result = box["result"]
    first, second = result.shards
    assert first.attempts == 2 and (1, 2) in jobs and second.attempts == 1, result.text()
    assert first.job_ids[0] != first.job_ids[1]
    assert result.ok and result.merged is None, result.text()
    # the resubmitted task resumed: it did only what was not done when the first one died
    assert first.summary["done"] == 5 and first.summary["processed"] <= (at_kill == PENDING).sum() < 5
    assert second.summary == {**second.summary, "done": 5, "failed": 0, "processed": 5}
    assert (video_dir / "logs").is_dir() and "logs" in result.text()
    with open_store(shared) as a, open_store(_reference(cfg, video_dir / "one.zarr")) as b:
        assert (a.status() == DONE).all()
        assert compare_stores(a, b) == []


def test_cli_hdf5_shards_are_merged_and_failed_videos_not_retried(video_dir):
    final, logs = video_dir / "m.h5", video_dir / "logs"
    r = CliRunner().invoke(submit, ["--executor", "local", "--shards", "2", "--folder", str(logs),
                                    "--max-retries", "2", "--", *_args(video_dir, final)])
    # shard 1 holds rows 0, 2, 4: a broken and a missing video, recorded and not retried
    assert r.exit_code == 1, r.output
    assert f"logs: {logs}" in r.output and "shard 2/2: job " in r.output
    assert "attempt 2" not in r.output and "1/3 done, 2 failed" in r.output and "3/3 done, 0 failed" in r.output
    assert "merged 4 done and 2 failed videos" in r.output
    assert (video_dir / "m.shard-1-of-2.h5").exists() and (video_dir / "m.shard-2-of-2.h5").exists()
    cfg = extract_config(_args(video_dir, final))
    with open_store(final) as m, open_store(_reference(cfg, video_dir / "ref.h5")) as ref:
        assert compare_stores(m, ref) == []


def test_cli_detach_returns_job_ids_and_the_tasks_finish(video_dir):
    (video_dir / "two.txt").write_text("left/v0.mp4 0\nright/v1.mp4 1\n")
    out = video_dir / "d.zarr"
    r = CliRunner().invoke(submit, ["--executor", "local", "--shards", "2", "--detach",
                                    *_args(video_dir, out, "two.txt")])
    assert r.exit_code == 0, r.output
    ids = r.output.split("submitted 2 task(s): ")[1].split(";")[0].split()
    assert len(ids) == 2 and all(i.isdigit() for i in ids)
    assert f"logs in {out}.submitit" in r.output and f"framesel info {out}" in r.output
    end = time.time() + 120
    while time.time() < end:   # nobody watches detached tasks: the store is the progress
        time.sleep(0.5)
        if out.exists():
            with open_store(out) as s:
                if (s.status() == DONE).all():
                    return
    pytest.fail("detached tasks did not finish the store")


def test_slurm_options_reach_sbatch():
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters({"gpus_per_task": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 90,
                               "partition": "gpu", "account": "vision", "mem_gb_unused": None})
    assert params == {"job_name": "framesel-extract", "time": 90, "gpus_per_task": 1, "cpus_per_task": 8,
                      "mem": "32GB", "partition": "gpu", "account": "vision"}
    sbatch = _make_sbatch_string(command="python -m x", folder="/tmp/logs", map_count=4, **params)
    for line in ["--gpus-per-task=1", "--cpus-per-task=8", "--mem=32GB", "--time=90", "--partition=gpu",
                 "--account=vision", "--array=0-3%4", "--job-name=framesel-extract"]:
        assert f"#SBATCH {line}" in sbatch
    assert slurm_parameters({"mem_gb": 1.5})["mem"] == "1536MB"
    assert slurm_parameters({})["time"] == DEFAULT_TIMEOUT_MIN   # never submitit's 5 minutes


def test_executor_choice_and_bad_requests(video_dir, tmp_path):
    cfg = extract_config(_args(video_dir, tmp_path / "x.zarr"))
    with pytest.raises(UnknownNameError, match="available: local, slurm"):
        make_executor("pbs", tmp_path, {}, cfg)
    if not any(os.access(os.path.join(d, "srun"), os.X_OK) for d in os.environ["PATH"].split(os.pathsep)):
        with pytest.raises(InputError, match="srun"):
            make_executor("slurm", tmp_path, {}, cfg)
    assert local_parameters({}, cfg) == {"timeout_min": DEFAULT_TIMEOUT_MIN, "gpus_per_node": 0}
    assert local_parameters({"gpus_per_task": 2}, cfg)["gpus_per_node"] == 2
    assert local_parameters({}, replace(cfg, device="cuda"))["gpus_per_node"] == 1
    with pytest.raises(InputError, match="--shards"):
        submit_extraction(cfg, shards=0, folder=tmp_path)
    with pytest.raises(UnknownNameError, match="executor 'pbs'"):
        submit_extraction(cfg, shards=2, executor="pbs", folder=tmp_path)
    with pytest.raises(InputError, match="--max-retries must be an integer >= 0, got -1"):
        submit_extraction(cfg, shards=2, max_retries=-1, folder=tmp_path)
    with pytest.raises(InputError, match="cfg.shard is set per task by submit"):
        submit_extraction(replace(cfg, shard=(1, 2)), shards=2, folder=tmp_path)
    with pytest.raises(InputError, match="none of the videos"):
        submit_extraction(replace(cfg, root=str(tmp_path)), shards=2, folder=tmp_path)
    assert not (tmp_path / "x.zarr").exists()   # nothing was submitted


def test_cli_refuses_shard_and_reports_bad_extract_options(video_dir):
    r = CliRunner().invoke(submit, ["--executor", "local", *_args(video_dir, video_dir / "x.zarr"),
                                    "--shard", "1/2"])
    assert r.exit_code == 2 and "--shards N" in r.output
    r = CliRunner().invoke(submit, ["--executor", "local", *_args(video_dir, video_dir / "x.zarr"),
                                    "--crops", "7"])
    assert r.exit_code == 2 and "--crops" in r.output
    r = CliRunner().invoke(submit, ["--executor", "slurm", "--shards", "0", *_args(video_dir, "x.zarr")])
    assert r.exit_code == 2 and "--shards" in r.output


def test_auto_flow_resolves_once_and_device_cuda_means_gpu_workers(video_dir):
    """--flow auto is resolved on the submitting host; --device cuda says the array tasks have
    a GPU even when the host (a login node) has none, so they get a GPU TV-L1."""
    from extract.flow import auto_algorithm, choose_tvl1, opencv_cuda_tvl1

    cfg = extract_config([*_args(video_dir, video_dir / "a.zarr"), "--flow", "auto"])
    assert cfg.settings.flow.algorithm == auto_algorithm()
    cfg = extract_config([*_args(video_dir, video_dir / "a.zarr"), "--flow", "auto", "--device", "cuda"])
    assert cfg.settings.flow.algorithm == choose_tvl1(opencv_cuda_tvl1(), True) != "tvl1"


def test_a_crashing_task_is_retried_then_reported(video_dir):
    """An exception that is not framesel's may be transient on a cluster (a file system
    hiccup), so it is retried; after max_retries the shard reports it. Every input a user can
    give is checked up front now, so the crash here comes from inside the task: torch refuses
    a library caller's threads=-1 with a RuntimeError when the task sets its threads."""
    cfg = replace(extract_config(_args(video_dir, video_dir / "s.zarr")), threads=-1)
    result = submit_extraction(cfg, shards=1, folder=video_dir / "logs", max_retries=1, poll_s=0.2)
    (run,) = result.shards
    assert run.attempts == 2 and run.summary is None and not result.ok
    assert "task raised" in run.error and "RuntimeError" in run.error and "Traceback" not in run.error, run.error
    assert "NO SUMMARY" in result.text()


def test_name_value_options_parse_json_values_and_reject_malformed_items():
    import click

    from pipeline.config import parse_assignments

    got = parse_assignments(["epsilon=0.05", "compile=true", "device=cuda:1", "x=[1, 2]"], "--flow-param")
    assert got == (("epsilon", 0.05), ("compile", True), ("device", "cuda:1"), ("x", [1, 2]))
    assert parse_assignments(["hidden-size=8"], "--set", underscores=True) == (("hidden_size", 8),)
    with pytest.raises(click.BadParameter, match="expected NAME=VALUE"):
        parse_assignments(["epsilon"], "--flow-param")


def test_flow_default_is_tvl1_on_cpu_and_auto_on_cuda(video_dir, capsys):
    """Issue 31 fix 2: without --flow, --device cuda gets a GPU TV-L1 (said on stderr);
    the CPU default stays OpenCV's tvl1; an explicit --flow always wins."""
    from extract.flow import choose_tvl1, opencv_cuda_tvl1

    base = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), "--out", str(video_dir / "d.zarr")]
    assert extract_config(base).settings.flow.algorithm == "tvl1"
    assert "defaults to auto" not in capsys.readouterr().err
    cfg = extract_config([*base, "--device", "cuda"])
    assert cfg.settings.flow.algorithm == choose_tvl1(opencv_cuda_tvl1(), True) != "tvl1"
    assert "--device cuda: --flow defaults to auto -> " + cfg.settings.flow.algorithm in capsys.readouterr().err
    assert extract_config([*base, "--device", "cuda", "--quiet"]).settings.flow.algorithm != "tvl1"
    assert capsys.readouterr().err == ""
    assert extract_config([*base, "--device", "cuda", "--flow", "tvl1"]).settings.flow.algorithm == "tvl1"
