"""Fault injection (issue 26): what a user does by accident, or what the machine does to a run,
neither crashes it nor mixes results. Real runs (real videos, real worker processes killed by
real signals, real checkpoints, real training), and every test ends with `framesel check` on
the store it touched: nothing lost, nothing mixed.

Faults: a missing video under every scheduler, a worker process killed (once, and every time
it decodes one video: what the kernel's OOM killer does to the worker holding a video too long
for memory), two `train` on one checkpoint, NaN weights, features that overflow float16, an
agent whose training diverged (NaN scores), two test lists of one file name, a checkpoint path
holding ``=``. Full disks and unreadable inputs of every command: tests/test_bad_inputs.py."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from data.store import DONE, FAILED, PENDING, open_store
from pipeline.cli import main
from conftest import TINY, cli_env

TORCH_THREADS = 1
CHEAP = [*TINY, "--frames", "2", "--flow-stack", "1", "--crops", "1", "--flow", "farneback", "--no-thumbnails", "--quiet"]
RESNET18 = [*CHEAP[len(TINY):], "--backbone", "resnet18"]     # the cheap settings on a user's ResNet-18
SCHEDULERS = {"sequential": ["--workers", "1"], "whole-videos": ["--workers", "2", "--whole-videos"],
              "pipeline": ["--workers", "2", "--pipeline"]}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def check_ok(store) -> None:
    """`framesel check STORE` finds nothing wrong."""
    r = cli("check", store)
    assert r.exit_code == 0 and "OK" in r.output, r.output


@pytest.fixture
def videos(tmp_path):
    """Five real 12-frame videos in videos/a/ and a list writer: ``lst(names)`` -> list path."""
    from conftest import moving_texture, write_video

    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    for k in range(5):
        write_video(root / "a" / f"v{k}.mp4", moving_texture(12, shift=(1 + k % 2, k % 3), seed=k))

    def lst(names, name="list.txt"):
        path = tmp_path / name
        path.write_text("".join(f"a/{n} 0\n" for n in names))
        return path
    return root, lst


# ----------------------------------------------------------------------------- item 1

@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_a_missing_video_is_recorded_and_the_run_goes_on_under_every_scheduler(videos, tmp_path, scheduler):
    """Issue 26 item 1: `--pipeline --workers 2` with flow on [v0, missing, v1] ended in an
    IndexError (device.py, group[0] of an empty group), the store at 0 done, 1 failed, 2
    pending. Every scheduler records the missing video and does the others."""
    root, lst = videos
    out = tmp_path / "s.zarr"
    r = cli("extract", lst(["v0.mp4", "missing.mp4", "v1.mp4"]), "--root", root, "--out", out, *CHEAP,
            *SCHEDULERS[scheduler])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "2/3 done, 1 failed" in r.output and "missing.mp4: file not found" in r.output, r.output
    with open_store(out) as s:
        assert s.status().tolist() == [DONE, FAILED, DONE]
    check_ok(out)


# ----------------------------------------------------------------------------- item 3

def _proc(pid: int) -> tuple[int, bytes] | None:
    """(parent pid, command line) of a live process, None once it is gone."""
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return ppid, Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError, ValueError):
        return None


class WorkerKiller:
    """SIGKILL the worker process of ``parent`` (a `framesel extract`) whose ffmpeg decodes a
    file named ``name`` — as the OOM killer ends the worker holding a video too long for
    memory — at most ``times`` times (None: every time it tries)."""

    def __init__(self, parent: int, name: str, times: int | None):
        self.parent, self.name, self.times, self.killed = parent, name.encode(), times, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.stop.is_set() and (self.times is None or len(self.killed) < self.times):
            for d in os.listdir("/proc"):
                if not d.isdigit() or (me := _proc(int(d))) is None:
                    continue
                ppid, cmd = me
                if b"ffmpeg" not in cmd or self.name not in cmd or ppid in self.killed:
                    continue
                worker = _proc(ppid)
                if worker and worker[0] == self.parent and b"spawn_main" in worker[1]:
                    os.kill(ppid, signal.SIGKILL)
                    self.killed.append(ppid)
            time.sleep(0.005)

    def close(self):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def poison(videos):
    """A 600-frame video: its decode lasts long enough (~0.5 s) for WorkerKiller to see it."""
    from conftest import moving_texture, write_video

    root, lst = videos
    write_video(root / "a" / "poison.mp4", moving_texture(600, h=128, w=170, seed=9), codec="libx264")
    return root, lst(["v0.mp4", "v1.mp4", "poison.mp4", "v2.mp4", "v3.mp4"])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finding the workers needs Linux's /proc")
@pytest.mark.parametrize("mode, times", [("--whole-videos", None), ("--pipeline", 1)],
                         ids=["whole-videos-killed-every-time", "pipeline-killed-once"])
def test_a_killed_worker_costs_at_most_its_video(poison, tmp_path, mode, times):
    """Issue 26 item 3: one worker killed ended the whole run with BrokenProcessPool. The
    videos in flight are retried one at a time in a fresh process: killed once (here a
    decode worker of the device pipeline), every video ends done; killed every time it
    decodes poison.mp4 (a whole-video worker), that one video is failed with the signal
    named, the others (in flight with it, retried alone too) done."""
    root, lst = poison
    out = tmp_path / "k.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "extract", lst, "--root", root, "--out", out,
                             *CHEAP, "--streams", "rgb", "--flow", "none", "--workers", "2", mode], env=cli_env(),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killer = WorkerKiller(proc.pid, "poison.mp4", times)
    try:
        text = proc.communicate(timeout=400)[0]
    finally:
        killer.close()
        proc.kill()
    assert killer.killed, text                      # the fault happened
    assert "Traceback" not in text and "BrokenProcessPool" not in text, text
    with open_store(out) as s:
        status, errors = s.status().tolist(), s.errors()
    if times == 1:
        assert proc.returncode == 0 and status == [DONE] * 5, text
    else:
        assert proc.returncode == 1 and status == [DONE, DONE, FAILED, DONE, DONE], text
        assert "SIGKILL" in errors[2] and "worker" in errors[2], errors[2]
        assert "4/5 done, 1 failed" in text and "poison.mp4" in text, text
    check_ok(out)


# ----------------------------------------------------------------------------- item 4

@pytest.fixture
def small_store(tmp_path):
    """A real store of 6 done videos with features and head logits over 3 classes (no
    backbone needed), and its list."""
    from test_cli import C, V, make_store

    (tmp_path / "all.txt").write_text("".join(f"c{i % C}/v{i}.mp4 {i % C}\n" for i in range(V)))
    return make_store(tmp_path / "s.zarr"), tmp_path / "all.txt"


def test_a_second_train_on_a_checkpoint_being_trained_stops_at_once(small_store, tmp_path):
    """Issue 26 item 4: two `framesel train` on one --out both ran, the last writer won.
    The second stops at once, naming the holder, as extraction's shard lock does."""
    store, lst = small_store
    out = tmp_path / "as.pt"
    args = [sys.executable, "-m", "pipeline.cli", "train", str(store), "--agent", "as", "--train", str(lst),
            "--out", str(out), "--seeds", "1", "--set", "epochs=100000", "--quiet"]
    first = subprocess.Popen(args, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not out.with_suffix(".jsonl").exists() and time.time() < deadline:   # it is training
            assert first.poll() is None
            time.sleep(0.1)
        t0 = time.time()
        second = subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=60)
        assert time.time() - t0 < 60
        assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(f"Error: {out}: being trained by pid {first.pid} on {socket.gethostname()} "
                               "since "), last
        assert first.poll() is None            # the holder goes on undisturbed
    finally:
        first.kill()
        first.wait()
    check_ok(store)


# ----------------------------------------------------------------------------- item 8

def test_two_test_lists_of_one_file_name_are_two_splits(small_store, tmp_path):
    """Issue 26 item 8: fold1/test.txt and fold2/test.txt were both split "test": the
    second's rows replaced the first's. Each keeps its rows, named by its folder."""
    store, _ = small_store
    lists = []
    for k, rows in ((1, range(0, 3)), (2, range(3, 6))):
        (tmp_path / f"fold{k}").mkdir()
        lists.append(tmp_path / f"fold{k}" / "test.txt")
        lists[-1].write_text("".join(f"c{i % 3}/v{i}.mp4 {i % 3}\n" for i in rows))
    r = cli("evaluate", store, "--test", lists[0], "--test", lists[1], "--out", tmp_path / "rep",
            "--baselines", "uniform,random", "--quiet")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "rep" / "results.json").read_text())["rows"]
    splits = {r["split"]: r["num_videos"] for r in rows if r["split"] != "mean"}
    assert splits == {"fold1/test": 3, "fold2/test": 3}, splits
    assert {r["num_splits"] for r in rows if r["split"] == "mean"} == {2}
    check_ok(store)


def test_the_same_test_list_twice_is_refused(small_store, tmp_path):
    store, lst = small_store
    r = cli("evaluate", store, "--test", lst, "--test", tmp_path / "." / lst.name, "--out", tmp_path / "rep",
            "--quiet")
    assert r.exit_code == 1 and "given twice" in r.output and str(lst.name) in r.output, r.output
    check_ok(store)


# ----------------------------------------------------------------------------- item 9

def _resnet18(path, scale=None, nan=None) -> Path:
    """A real resnet18 checkpoint (torchvision layout, random init, a head over the lists'
    one class); ``nan``: a tensor set to
    NaN (a diverged fine-tune); ``scale``: the last BatchNorm's gain times ``scale``
    (finite weights whose features overflow float16)."""
    from tests.peer_checkpoints import random_checkpoint, save_torchvision

    random_checkpoint("resnet18", path, num_classes=1)
    state = torch.load(path, weights_only=True)
    if nan:
        state[nan] = torch.full_like(state[nan], float("nan"))
    if scale:
        state["layer4.1.bn2.weight"] = state["layer4.1.bn2.weight"] * scale
        state["layer4.1.bn2.bias"] = state["layer4.1.bn2.bias"].abs() * scale
    save_torchvision(state, path)
    return path


def test_nan_weights_are_refused_before_any_video(videos, tmp_path):
    """Issue 26 item 9: a checkpoint with NaN weights gave NaN features, every video "done".
    The checkpoint is refused up front, naming it and a tensor; no store is made."""
    root, lst = videos
    ck = _resnet18(tmp_path / "diverged.pth", nan="layer3.0.conv1.weight")
    out = tmp_path / "n.zarr"
    r = cli("extract", lst(["v0.mp4", "v1.mp4"]), "--root", root, "--out", out, *RESNET18, "--streams", "rgb",
            "--flow", "none", "--checkpoint", f"rgb={ck}")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert str(ck) in r.output and "NaN" in r.output and "layer3.0.conv1.weight" in r.output, r.output
    assert not out.exists()      # refused before the store is made: nothing to check


def test_features_that_overflow_float16_fail_their_video_and_stop_a_hopeless_run(videos, tmp_path):
    """Issue 26 item 9: finite weights whose features overflow the store's float16 (inf)
    marked every video done. Such a video fails with the cause; when the first videos all
    fail so, the run stops (the rest stay pending) saying the weights are broken."""
    root, lst = videos
    ck = _resnet18(tmp_path / "loud.pth", scale=1e7)
    out = tmp_path / "o.zarr"
    r = cli("extract", lst([f"v{k}.mp4" for k in range(5)]), "--root", root,
            "--out", out, *RESNET18, "--streams", "rgb", "--flow", "none",
            "--checkpoint", f"rgb={ck}")
    assert r.exit_code == 1, r.output
    with open_store(out) as s:
        status, errors = s.status().tolist(), s.errors()
    assert status == [FAILED] * 3 + [PENDING] * 2, (status, r.output)
    assert all("non-finite" in e and "rgb/features" in e for e in errors[:3]), errors
    assert "STOPPED" in r.output and "weights" in r.output, r.output
    check_ok(out)


def test_check_reports_non_finite_rows(tmp_path):
    """`framesel check` names a done video whose features hold NaN (a store written before
    this fix, or by another tool)."""
    from test_cli import make_store

    store = make_store(tmp_path / "s.zarr")
    with open_store(store, "a") as s:
        s._write_row("rgb/features", 2, np.full(s.shape("rgb/features")[1:], np.nan, np.float16))
    r = cli("check", store)
    assert r.exit_code == 1 and "video 2" in r.output and "rgb/features holds NaN or inf" in r.output, r.output


# ----------------------------------------------------------------------------- item 10

def test_an_agent_that_scores_nan_fails_its_rows_and_the_report_is_written(small_store, tmp_path):
    """Issue 26 item 10: an agent whose training diverged (lr 1e30: NaN weights, NaN
    scores) made evaluate crash and the whole report was lost. Its rows are failed rows
    naming the cause, the baselines' rows and the report are written, exit 1 with a summary."""
    store, lst = small_store
    ck = tmp_path / "diverged.pt"
    r = cli("train", store, "--agent", "as", "--train", lst, "--out", ck, "--seeds", "1", "--set", "epochs=2", "--set", "lr=1e30",
            "--quiet")
    assert r.exit_code == 0, r.output
    rep = tmp_path / "rep"
    r = cli("evaluate", store, "--test", lst, "--agents", ck, "--out", rep, "--baselines", "uniform,random",
            "--quiet")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output and "FAILED as" in r.output and "non-finite" in r.output, r.output
    doc = json.loads((rep / "results.json").read_text())
    ok = {(x["method"], x["protocol"]) for x in doc["rows"]}
    assert ("uniform", "accuracy_vs_m") in ok and not any(m == "as" for m, _ in ok), ok
    failed = doc["meta"]["failed"]
    assert failed and all(f["method"] == "as" and "non-finite" in f["cause"] for f in failed), failed
    assert "non-finite" in (rep / "report.md").read_text()
    assert (rep / "report.html").exists()
    check_ok(store)


# ----------------------------------------------------------------------------- item 11

def test_a_checkpoint_path_with_an_equals_sign(videos, tmp_path):
    """Issue 26 item 11: `--checkpoint rgb=runs/run=3/tsn.pth` split at the last "=" (stream
    "rgb=runs/run", path "3/tsn.pth"). It splits at the first "=" before a stream name."""
    root, lst = videos
    (tmp_path / "runs" / "run=3").mkdir(parents=True)
    ck = _resnet18(tmp_path / "runs" / "run=3" / "tsn.pth")
    out = tmp_path / "e.zarr"
    r = cli("extract", lst(["v0.mp4"]), "--root", root, "--out", out, *RESNET18, "--streams", "rgb",
            "--flow", "none", "--checkpoint", f"rgb={ck}")
    assert r.exit_code == 0, r.output
    with open_store(out) as s:
        assert s.attrs["backbone"]["rgb"]["file"] == str(ck.resolve())
    check_ok(out)


@pytest.mark.parametrize("value, parsed", [
    ("rgb=runs/run=3/tsn.pth", ("rgb", "runs/run=3/tsn.pth")),
    ("flow=a=b.pth", ("flow", "a=b.pth")),
    ("runs/run=3/tsn.pth", ("rgb", "runs/run=3/tsn.pth")),     # no stream: the rgb stream's
    ("tsn.pth", ("rgb", "tsn.pth")),
    ("RGB=ft.pth", ("RGB", "ft.pth")),                          # a stream name, refused later by name
])
def test_checkpoint_values_split_at_the_first_equals_after_a_stream_name(value, parsed):
    from pipeline.options import parse_checkpoint

    assert parse_checkpoint(value) == parsed


def test_a_method_whose_selection_raises_fails_only_its_rows():
    """Issue 26 item 10, the other cause: a selector that raises (here a learned one whose
    states lack what it reads) fails its own rows with the cause; every other row is made."""
    from agents.base import Selector
    from agents.synthetic import planted_states
    from evaluate.protocols import ProtocolConfig, build_methods, run_protocols

    class NeedsMaps(Selector):
        name, learned, store_identity, config = "needs_maps", True, {"stream": "rgb"}, None

        def score(self, states):
            return states.feature_maps.mean((-1, -2, -3))     # None: the store has no maps

    st = {"rgb": planted_states(V=12, T=6, K=1, D=4, C=3, n_key=2, seed=0)}
    rows = run_protocols(st, build_methods(["uniform"], [NeedsMaps()], st),
                         config=ProtocolConfig(ms=(2,), protocols=("accuracy_vs_m",), bootstrap=50))
    failed = [r for r in rows if "failed" in r]
    assert failed and {r["method"] for r in failed} == {"needs_maps"}, rows
    assert all("its selection raised AttributeError" in r["failed"] for r in failed), failed
    assert [r["top1"] for r in rows if r["method"] == "uniform"] and all(
        r["top1"] is not None for r in rows if r["method"] == "uniform")
