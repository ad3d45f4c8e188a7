"""Extraction end to end, for real: ffmpeg decode, OpenCV flow, the pretrained backbone, real
stores; failures recorded; shards, workers, kill-and-resume run as real subprocesses."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
from click.testing import CliRunner

from data.store import DONE, FAILED, PENDING, compare_stores, open_store
from pipeline.cli import main

# Fast but real settings: 4 positions, 2 flow pairs, 1 crop, Farneback (TV-L1 has its own test).
FAST = ["--frames", "4", "--flow-stack", "2", "--crops", "1", "--flow", "farneback", "--quiet"]


def extract(args, **kw):
    return CliRunner().invoke(main, ["extract", *args], catch_exceptions=False, **kw)


def test_extract_records_failures_and_goes_on(video_dir):
    out = video_dir / "s.zarr"
    r = extract([str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), "--out", str(out), *FAST])
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
    # a second run does nothing new and still reports the failures
    r2 = extract([str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), "--out", str(out), *FAST])
    assert r2.exit_code == 1 and "(0 processed" in r2.output
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and "done 4  failed 2  pending 0" in info.output
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


def _env():
    env = dict(os.environ)
    env.pop("CI", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_concurrent_shards_into_one_zarr_store(video_dir):
    base = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), *FAST]
    shared, single = video_dir / "shared.zarr", video_dir / "single.zarr"
    procs = [subprocess.Popen(_cli(*base, "--out", str(shared), "--shard", f"{k}/2"), env=_env(),
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


def test_killed_run_resumes_to_the_same_store(tmp_path, video_dir):
    from conftest import moving_texture, write_video

    root = video_dir / "videos"
    lines = []
    for k in range(8):
        write_video(root / "left" / f"long{k}.mp4", moving_texture(16, shift=(1, k % 3), seed=10 + k))
        lines.append(f"left/long{k}.mp4 0")
    (video_dir / "long.txt").write_text("\n".join(lines) + "\n")
    base = [str(video_dir / "long.txt"), "--root", str(root), *FAST]
    killed = video_dir / "killed.zarr"
    proc = subprocess.Popen(_cli(*base, "--out", str(killed)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.2)
        if killed.exists():
            with open_store(killed) as s:
                if (s.status() == DONE).sum() >= 3:
                    break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_store(killed) as s:
        partial = s.status()
    assert 3 <= (partial == DONE).sum() < 8 and (partial == PENDING).any()
    r = subprocess.run(_cli(*base, "--out", str(killed)), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"({(partial == PENDING).sum()} processed" in r.stdout
    extract([*base, "--out", str(video_dir / "straight.zarr")])
    with open_store(killed) as a, open_store(video_dir / "straight.zarr") as b:
        assert compare_stores(a, b) == []


def test_workers_give_the_same_store(video_dir):
    base = [str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), *FAST]
    r = extract([*base, "--out", str(video_dir / "w.zarr"), "--workers", "2"])
    assert r.exit_code == 1 and "4/6 done, 2 failed" in r.output
    extract([*base, "--out", str(video_dir / "one.zarr")])
    with open_store(video_dir / "w.zarr") as a, open_store(video_dir / "one.zarr") as b:
        assert compare_stores(a, b, atol=1e-2) == []


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
