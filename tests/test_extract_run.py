"""Extraction end to end, for real: ffmpeg decode, OpenCV flow, the pretrained backbone, real
stores; failures recorded; shards, workers, kill-and-resume run as real subprocesses."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from data.store import DONE, FAILED, PENDING, compare_stores, open_store
from pipeline.cli import main
from conftest import SLOW_FLOW, TINY, cli_env, slow_flow

# Fast but real settings: 4 positions, 2 flow pairs, 1 crop, Farneback (TV-L1 has its own test),
# the tiny random backbone (tests/conftest.py: TINY; the first test extracts with the default).
FAST = [*TINY, "--frames", "4", "--flow-stack", "2", "--crops", "1", "--flow", "farneback", "--quiet"]


def extract(args, **kw):
    return CliRunner().invoke(main, ["extract", *args], catch_exceptions=False, **kw)


def assert_cost_recorded(store) -> None:
    """Every done video has its cost record: seconds > 0 for each stage that works (the
    flow's pricing may take no measurable time), and its flow fields priced."""
    done = store.done()
    stages = store.attrs["cost_stages"]
    assert stages == ["decode", "flow", "flow_cost", "backbone:rgb", "backbone:flow"]
    sec = store.read_rows("cost/seconds", done)
    work = [i for i, n in enumerate(stages) if n != "flow_cost"]
    assert sec.shape == (len(done), len(stages)) and (sec[:, work] > 0).all() and (sec >= 0).all(), sec
    assert (store.read_rows("cost/flow_gflops", done) > 0).all()
    assert (store.read_rows("cost/flow_fields", done) > 0).all()


DEFAULT_BACKBONE = FAST[len(TINY):]    # the embedded EfficientNet-Lite0


def test_extract_records_failures_and_goes_on(video_dir):
    out = video_dir / "s.zarr"
    r = extract([str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), "--out", str(out),
                 *DEFAULT_BACKBONE])
    assert r.exit_code == 1, r.output
    assert "4/6 done, 2 failed" in r.output
    assert "broken.mp4" in r.output and "missing.mp4" in r.output
    with open_store(out) as s:
        st = s.status()
        assert st.tolist() == [DONE, DONE, FAILED, DONE, FAILED, DONE]
        errors = s.errors()
        assert "broken.mp4" in errors[2] and "missing.mp4" in errors[4]
        assert s.read("videos/num_frames", 0) == 10 and s.read("videos/num_frames", 3) == 13
        f = s.read("rgb/features", 0)
        assert f.shape == (4, 1, 1280) and f.dtype == np.float16 and np.isfinite(f).all()
        assert not s.has("rgb/logits")   # the ImageNet head is not the dataset's: `head` makes them
        assert s.read("flow/features", 0).shape == (4, 1, 1280)
        # frames translate 2 px per frame horizontally: motion is about 2 px, not 0
        m = s.read("motion", 0)
        assert np.all((m > 1.0) & (m < 4.0)), m
        fi = s.read("frame_index", 3)
        assert fi.min() >= 0 and fi.max() + 2 <= 12 and np.all(np.diff(fi) > 0)
        a = s.attrs
        assert a["flow"]["algorithm"] == "farneback" and a["T"] == 4 and a["crops"] == 1
        assert a["backbone"]["rgb"]["gflops_per_frame"] > 0.3
        assert a["backbone"]["flow"]["in_channels"] == 4
        assert len(a["list_sha256"]) == 64 and a["versions"]["ffmpeg"]
        assert_cost_recorded(s)                                       # the sequential way
        assert a["cost"]["flow_gflops"]["kind"] == "counted" and "seconds" in a["cost"]
    # a second run does nothing new and still reports the failures
    r2 = extract([str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), "--out", str(out),
                  *DEFAULT_BACKBONE])
    assert r2.exit_code == 1 and "(0 processed" in r2.output
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and "done 4  failed 2  pending 0" in info.output
    assert "measured seconds per video (mean of 4 done): decode" in info.output
    check = CliRunner().invoke(main, ["check", str(out)])
    assert check.exit_code == 0, check.output


def test_settings_mismatch_is_refused(video_dir):
    out = str(video_dir / "s.zarr")
    args = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), "--out", out]
    extract([*args, *FAST])
    r = CliRunner().invoke(main, ["extract", *args, *FAST[:-2], "dis", "--quiet"])
    assert r.exit_code == 1 and "other settings" in r.output and "flow" in r.output


def test_zarr_and_hdf5_stores_of_one_run_are_equal(video_dir):
    args = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), *FAST]
    extract([*args, "--out", str(video_dir / "a.zarr")])
    extract([*args, "--out", str(video_dir / "a.h5")])
    with open_store(video_dir / "a.zarr") as z, open_store(video_dir / "a.h5") as h:
        assert compare_stores(z, h) == []


def _cli(*args):
    return [sys.executable, "-m", "pipeline.cli", "extract", *args]


def test_concurrent_shards_into_one_zarr_store(video_dir):
    base = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), *FAST]
    shared, single = video_dir / "shared.zarr", video_dir / "single.zarr"
    procs = [subprocess.Popen(_cli(*base, "--out", str(shared), "--shard", f"{k}/2"), env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for k in (1, 2)]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    # shard 1 holds rows 0, 2, 4 (two bad videos), shard 2 rows 1, 3, 5 (all good)
    assert [p.returncode for p in procs] == [1, 0], outs
    assert "1/3 done, 2 failed" in outs[0] and "3/3 done, 0 failed" in outs[1]
    extract([*base, "--out", str(single)])
    with open_store(shared) as a, open_store(single) as b:
        assert a.status().tolist() == b.status().tolist() == [DONE, DONE, FAILED, DONE, FAILED, DONE]
        assert compare_stores(a, b) == []


def test_hdf5_shards_and_merge(video_dir):
    base = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), *FAST]
    final = video_dir / "m.h5"
    for k in (1, 2):
        extract([*base, "--out", str(final), "--shard", f"{k}/2"])
    parts = [str(video_dir / f"m.shard-{k}-of-2.h5") for k in (1, 2)]
    r = CliRunner().invoke(main, ["merge", *parts, "--out", str(final)])
    assert r.exit_code == 0, r.output
    extract([*base, "--out", str(video_dir / "ref.h5")])
    with open_store(final) as m, open_store(video_dir / "ref.h5") as ref:
        assert compare_stores(m, ref) == []


def _long_list(video_dir, n: int = 8) -> list[str]:
    """Extract arguments for ``n`` 16-frame videos whose flow sleeps 0.03 s per pair (0.24 s a
    video, conftest.slow_flow): a run long enough to interrupt. Run them with ``_slow``."""
    from conftest import moving_texture, write_video

    root = video_dir / "videos"
    lines = []
    for k in range(n):
        write_video(root / "left" / f"long{k}.mp4", moving_texture(16, shift=(1, k % 3), seed=10 + k))
        lines.append(f"left/long{k}.mp4 0")
    (video_dir / "long.txt").write_text("\n".join(lines) + "\n")
    return [str(video_dir / "long.txt"), "--root", str(root), *FAST, *slow_flow(0.03)]


def _slow(*args, wait=True):
    """`framesel extract *args` of a ``_long_list`` in a subprocess (the flow plugin loaded
    there, not in the test process): finished (CompletedProcess), or running (Popen)."""
    if wait:
        return subprocess.run(_cli(*args), env=cli_env(SLOW_FLOW), capture_output=True, text=True, timeout=300)
    return subprocess.Popen(_cli(*args), env=cli_env(SLOW_FLOW), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_done(store, count: int, proc, timeout: float = 240) -> None:
    """Until ``count`` videos of ``store`` are done by the running ``proc``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.2)
        assert proc.poll() is None, "the extraction ended before it was interrupted"
        if store.exists():
            with open_store(store) as s:
                if (s.status() == DONE).sum() >= count:
                    return
    raise AssertionError(f"{store}: fewer than {count} videos done after {timeout} s")


def test_killed_run_resumes_to_the_same_store(tmp_path, video_dir):
    base = _long_list(video_dir)
    killed = video_dir / "killed.zarr"
    proc = _slow(*base, "--out", str(killed), wait=False)
    _wait_done(killed, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_store(killed) as s:
        partial = s.status()
    assert 3 <= (partial == DONE).sum() < 8 and (partial == PENDING).any()
    r = _slow(*base, "--out", str(killed))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"({(partial == PENDING).sum()} processed" in r.stdout
    assert _slow(*base, "--out", str(video_dir / "straight.zarr")).returncode == 0
    with open_store(killed) as a, open_store(video_dir / "straight.zarr") as b:
        assert compare_stores(a, b) == []


def test_workers_give_the_same_store(video_dir):
    base = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), *FAST]
    r = extract([*base, "--out", str(video_dir / "w.zarr"), "--workers", "2"])
    assert r.exit_code == 1 and "4/6 done, 2 failed" in r.output
    extract([*base, "--out", str(video_dir / "one.zarr")])
    with open_store(video_dir / "w.zarr") as a, open_store(video_dir / "one.zarr") as b:
        assert compare_stores(a, b, atol=1e-2) == []     # cost/seconds left out: execution facts
        assert_cost_recorded(a)                           # whole-video workers


def test_retry_failed_and_short_video_notes(video_dir):
    from conftest import moving_texture, write_video

    args = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), "--out", str(video_dir / "r.zarr"), *FAST]
    assert extract(args).exit_code == 1
    # the user repairs the broken file: a plain rerun skips it, --retry-failed extracts it
    write_video(video_dir / "videos" / "right" / "broken.mp4", moving_texture(3, seed=9))
    r = extract(args)
    assert r.exit_code == 1 and "(0 processed" in r.output
    r = extract([*args, "--retry-failed"])
    assert "5/6 done, 1 failed" in r.output and "(2 processed" in r.output
    with open_store(video_dir / "r.zarr") as s:
        assert s.status()[2] == DONE and s.read("videos/num_frames", 2) == 3
        notes = s.notes()
        assert "shorter" in notes[2] or "clamp" in notes[2], notes[2]   # 3 frames < T positions
        assert notes[0] == ""


def test_tvl1_is_the_default_and_recovers_motion(video_dir):
    """The papers' setting: TV-L1 on the L pairs of each sampled position only."""
    (video_dir / "one.txt").write_text("left/v0.mp4 0\n")
    out = video_dir / "t.zarr"
    r = extract([str(video_dir / "one.txt"), "--root", str(video_dir / "videos"), "--out", str(out),
                 "--frames", "2", "--flow-stack", "1", "--crops", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    with open_store(out) as s:
        assert s.attrs["flow"]["algorithm"] == "tvl1"
        m = s.read("motion", 0)
        np.testing.assert_allclose(m, 2.0, atol=0.3)


def test_bad_options_are_clear(video_dir):
    r = CliRunner().invoke(main, ["extract", str(video_dir / "list.txt"), "--out", str(video_dir / "x.zarr"),
                                  "--root", str(video_dir), "--shard", "3/2"])
    assert r.exit_code == 2 and "K must be between 1 and N" in r.output
    r = CliRunner().invoke(main, ["extract", str(video_dir / "list.txt"), "--out", str(video_dir / "x.zarr"),
                                  "--root", str(video_dir / "list.txt")])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["extract", str(video_dir / "list.txt"), "--out", str(video_dir / "x.zarr"),
                                  "--root", str(video_dir), *FAST])
    assert r.exit_code == 1 and "none of the videos" in r.output


def test_tvl1_torch_features_are_interchangeable_with_opencv(video_dir):
    """Issue 6: features extracted with the torch TV-L1 match OpenCV's (same parameters)."""
    (video_dir / "one.txt").write_text("left/v1.mp4 0\n")
    params = ["--flow-param", "nscales=2", "--flow-param", "warps=2"]   # keeps the CPU run short
    base = [str(video_dir / "one.txt"), "--root", str(video_dir / "videos"), "--frames", "2",
            "--flow-stack", "2", "--crops", "1", *params, "--quiet"]
    for algo in ("tvl1", "tvl1-torch"):
        r = extract([*base, "--flow", algo, "--out", str(video_dir / f"{algo}.zarr")])
        assert r.exit_code == 0, r.output
    with open_store(video_dir / "tvl1.zarr") as a, open_store(video_dir / "tvl1-torch.zarr") as b:
        assert b.attrs["flow"]["algorithm"] == "tvl1-torch"
        np.testing.assert_allclose(a.read("motion", 0), b.read("motion", 0), atol=0.01)
        fa = a.read("flow/features", 0).astype(np.float32).ravel()
        fb = b.read("flow/features", 0).astype(np.float32).ravel()
        cos = fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb))
        assert cos > 0.999, cos
        print(f"flow features cosine {cos:.6f}, max diff {np.abs(fa - fb).max():.4g}")
        assert np.abs(fa - fb).max() < 0.05 * np.abs(fa).max()
        np.testing.assert_array_equal(a.read("rgb/features", 0), b.read("rgb/features", 0))


# ----------------------------------------------------------------------------- issue 10: inputs

def refused(r, *needles):
    """A clear one-line error: exit 1 through ClickException, no traceback, naming ``needles``."""
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    msg = r.output.strip()
    assert msg.startswith("Error: ") and "\n" not in msg and "Traceback" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.mark.parametrize("args, needles", [
    # RGB=ft.pth gave ImageNet features while the store recorded the checkpoint
    (["--checkpoint", "RGB=ft.pth"],
     ["--checkpoint RGB=ft.pth: 'RGB' is not one of the extracted streams (--streams rgb,flow)"]),
    (["--streams", "rgb", "--checkpoint", "flow=f.pth"], ["'flow' is not one of"]),
    # an empty --streams made a store whose every video failed with IndexError
    (["--streams", ""], ["--streams is empty", "rgb and flow"]),
    (["--streams", "rgb,depth"], ["unknown stream 'depth'; extraction produces rgb and flow"]),
    (["--streams", "rgb,rgb"], ["stream 'rgb' is named twice"]),
    # --format hdf5 --out x.zarr wrote a store no other command could open
    (["--format", "hdf5"], ["would be read as zarr", "end --out in .h5 or .hdf5"]),
    (["--format", "zarr", "--out", "x.h5"], ["end --out in .zarr"]),
    (["--flow", "tvl1", "--flow-param", "epsilon=-1"], ["flow parameter 'epsilon' of 'tvl1' must be > 0, got -1"]),
    (["--preset", "bgr"], ["unknown preprocessing preset 'bgr'", "caffe_bgr", "mmaction2"]),
], ids=["checkpoint-RGB", "checkpoint-flow", "streams-empty", "streams-unknown", "streams-twice",
        "hdf5-as-zarr", "zarr-as-h5", "epsilon", "preset"])
def test_bad_streams_checkpoints_formats_and_flow_params_are_refused_up_front(video_dir, monkeypatch, args, needles):
    """Issue 10: each of these used to start (or silently change) the extraction."""
    monkeypatch.chdir(video_dir)
    base = ["list.txt", "--root", "videos", "--out", "x.zarr", *FAST]
    refused(CliRunner().invoke(main, ["extract", *base, *args]), *needles)
    assert not (video_dir / "x.zarr").exists() and not (video_dir / "x.h5").exists()


def test_out_that_cannot_be_a_store_is_a_clear_error(video_dir):
    """Issue 10: --out an existing regular file, or beneath one, gave a raw traceback. (Tests
    run as root, whom chmod does not stop: a path beneath a regular file stands in for an
    unwritable directory.)"""
    base = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), *FAST]
    taken = video_dir / "taken.zarr"
    taken.write_text("my notes")
    refused(CliRunner().invoke(main, ["extract", *base, "--out", str(taken)]),
            f"--out {taken} is an existing file, not a Zarr store")
    assert taken.read_text() == "my notes"
    under = video_dir / "list.txt" / "sub" / "s.zarr"
    refused(CliRunner().invoke(main, ["extract", *base, "--out", str(under)]),
            f"cannot create --out {under}: {video_dir / 'list.txt'} is a file, not a directory")
    # a read-only file system (procfs here, which refuses even root)
    if Path("/proc/sys").is_dir() and not os.access("/proc/sys", os.W_OK):
        refused(CliRunner().invoke(main, ["extract", *base, "--out", "/proc/sys/s.zarr"]),
                "cannot create --out /proc/sys/s.zarr: /proc/sys is not writable")


def test_list_paths_outside_root_are_refused_by_extract(video_dir):
    """Issue 10: list paths could escape --root with '..' or an absolute path."""
    out = video_dir / "esc.zarr"
    for bad in ("../list.txt", str(video_dir / "videos" / "left" / "v0.mp4")):
        (video_dir / "esc.txt").write_text(f"left/v0.mp4 0\n{bad} 1\n")
        msg = refused(CliRunner().invoke(main, ["extract", str(video_dir / "esc.txt"), "--root",
                                                str(video_dir / "videos"), "--out", str(out), *FAST]),
                      f"esc.txt:2: path {bad!r}")
        assert ("climbs out of the root" in msg) == bad.startswith("..")
    assert not out.exists()
    # without --root, absolute paths stand for themselves
    (video_dir / "abs.txt").write_text(f"{video_dir / 'videos' / 'left' / 'v0.mp4'} 0\n")
    r = extract([str(video_dir / "abs.txt"), "--out", str(out), *FAST])
    assert r.exit_code == 0 and "1/1 done" in r.output, r.output


def _old_sha256(settings: dict) -> str:
    """config_sha256 as stores made before issue 10 recorded it: batch size included."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def test_resume_ignores_batch_size_but_not_another_root(video_dir, monkeypatch):
    """Issue 10: a resume on a smaller GPU (--batch-size) was refused while another --root was
    accepted. Also: a list path with a space goes through the CLI (it was 'not an integer')."""
    import shutil

    root = video_dir / "videos"
    shutil.copy(root / "left" / "v0.mp4", root / "left" / "my clip.mp4")
    (video_dir / "one.txt").write_text("left/my clip.mp4 0\nright/missing.mp4 1\n")
    out = video_dir / "b.zarr"
    args = [str(video_dir / "one.txt"), "--out", str(out), *FAST]
    r = extract([*args, "--root", str(root), "--batch-size", "16"])
    assert "1/2 done, 1 failed" in r.output, r.output
    assert not list(video_dir.glob(".b.zarr.*lock"))          # the shard lock is gone after the run
    with open_store(out) as s:
        assert s.paths[0] == "left/my clip.mp4" and s.status()[0] == DONE
        a = s.attrs
        assert a["settings"]["batch_size"] == 16 and a["root"] == str(root.resolve())
        assert a["run"] == {"device": "cpu", "workers": 1, "threads": 0, "device_pipeline": False}
        old = _old_sha256(a["settings"])
    # a smaller batch resumes (nothing left to do but the failed video, which is not retried)
    r = extract([*args, "--root", str(root), "--batch-size", "2"])
    assert r.exit_code == 1 and "(0 processed" in r.output, r.output
    # a store made by the old hashing (batch size in config_sha256) keeps resuming
    with open_store(out, "a") as s:
        s.set_attrs({"config_sha256": old})
    r = extract([*args, "--root", str(root), "--batch-size", "4"])
    assert r.exit_code == 1 and "(0 processed" in r.output, r.output
    # ...but what determines the features still counts, in old and new stores alike
    refused(CliRunner().invoke(main, ["extract", *args, "--root", str(root), "--frames", "5"]),
            "other settings (differ: T 4 vs 5; settings.frames 4 vs 5);")      # batch size is not among them
    # a relative --root naming the same directory is the same root
    monkeypatch.chdir(video_dir)
    r = extract([*args, "--root", "./videos/"])
    assert r.exit_code == 1 and "(0 processed" in r.output, r.output
    # another root is refused, naming both
    other = video_dir / "copy"
    shutil.copytree(root, other)
    refused(CliRunner().invoke(main, ["extract", *args, "--root", str(other)]),
            f"made from the videos under --root {root.resolve()}", f"reads them from --root {other.resolve()}")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process from /proc, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (fields[0], int(fields[1])) if fields[0] not in "ZX" else None   # a zombie is dead


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _proc_stat(int(d.name))) and st[1] == pid:
            kids.append(int(d.name))
    return kids


@pytest.mark.parametrize("mode", ["--whole-videos", "--pipeline"])
def test_killing_the_parent_kills_its_workers_and_a_resume_finishes(video_dir, mode):
    """Issue 10: SIGKILL of `extract --workers N` left N workers alive forever. Decode
    workers of the device pipeline (issue 14) die with it too."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("finding the workers needs Linux's /proc")
    base = _long_list(video_dir)
    store = video_dir / "w.zarr"
    proc = _slow(*base, "--out", str(store), "--workers", "2", mode, wait=False)
    kids = []
    try:
        _wait_done(store, 1, proc)
        kids = _children(proc.pid)
        workers = [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(workers) == 2, kids
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while any(_proc_stat(k) for k in kids) and time.time() < deadline:
            time.sleep(0.2)
        assert [k for k in kids if _proc_stat(k)] == [], "children outlived their killed parent"
    finally:
        proc.kill()
        for k in kids:          # before the fix they live on: do not leave them behind
            if _proc_stat(k):
                os.kill(k, signal.SIGKILL)
    with open_store(store) as s:
        assert (s.status() == PENDING).any()
    r = _slow(*base, "--out", str(store))
    assert r.returncode == 0, r.stdout + r.stderr
    with open_store(store) as s:
        assert (s.status() == DONE).all()


def test_a_second_process_on_the_same_shard_stops_at_once(video_dir):
    """Issue 10: two processes on one Zarr shard both did all the work without a warning."""
    import socket

    base = _long_list(video_dir)
    store = video_dir / "l.zarr"
    first = _slow(*base, "--out", str(store), wait=False)
    try:
        _wait_done(store, 1, first)
        second = _slow(*base, "--out", str(store))
        assert second.returncode == 1, second.stdout + second.stderr
        assert "Traceback" not in second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(f"Error: {store}: shard 1/1 is being extracted by pid {first.pid} "
                               f"on {socket.gethostname()} since "), last
        assert first.poll() is None            # the holder goes on undisturbed
    finally:
        first.kill()
        first.wait()


def test_resume_with_another_flow_batch_size_is_accepted(video_dir):
    """Issue 31 fix 3: tvl1-torch's batch_size/device/compile say how flow ran, not what it
    computed, so a run resumed with another flow batch size goes on (its videos are processed),
    while another epsilon is still refused."""
    root = video_dir / "videos"
    (video_dir / "two.txt").write_text("left/v0.mp4 0\nright/missing.mp4 1\n")
    out = video_dir / "t.zarr"
    tiny = ["--frames", "2", "--flow-stack", "1", "--crops", "1", "--streams", "flow", "--no-thumbnails",
            "--quiet", "--flow", "tvl1-torch", "--flow-param", "nscales=1", "--flow-param", "warps=1",
            "--flow-param", "outer_iterations=1", "--flow-param", "inner_iterations=3",
            "--flow-param", "device=cpu"]
    args = [str(video_dir / "two.txt"), "--root", str(root), "--out", str(out), *tiny]
    r = extract([*args, "--flow-param", "batch_size=4"])
    assert "1/2 done, 1 failed" in r.output, r.output
    (root / "right" / "missing.mp4").write_bytes((root / "left" / "v0.mp4").read_bytes())
    r = extract([*args, "--flow-param", "batch_size=1", "--retry-failed"])
    assert r.exit_code == 0 and "(1 processed" in r.output, r.output
    with open_store(out) as s:
        assert list(s.status()) == [DONE, DONE]
        assert s.attrs["settings"]["flow"]["params"]["batch_size"] == 4     # recorded, not compared
    refused(CliRunner().invoke(main, ["extract", *args, "--flow-param", "epsilon=0.05"]),
            "settings.flow.params.epsilon 0.01 vs 0.05")


def test_a_run_leaves_the_callers_thread_counts_as_it_found_them(video_dir):
    """run_extraction sets torch's and OpenCV's threads for its work (--threads, else the
    cores shared out) and puts the caller's back: a library call, not a process setting."""
    import cv2
    import torch

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        extract([str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), "--out",
                 str(video_dir / "t.zarr"), *FAST, "--threads", "2"])
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_threads_default_to_the_budget_the_environment_gives(monkeypatch):
    """Without --threads a run uses OMP_NUM_THREADS when set, else the cores this process may
    run on (its affinity: inside a Slurm job or a cpuset, not the whole node's os.cpu_count()),
    shared out among whole-video workers."""
    import os

    import torch

    from extract.run import ExtractConfig
    from extract.workers import thread_budget, threads_of

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_budget() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_budget() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})     # a job given one core of a node
    assert thread_budget() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    with threads_of(ExtractConfig(list_path="x", out="y", workers=2)):
        assert torch.get_num_threads() == 2                           # 4 threads, 2 whole-video workers
