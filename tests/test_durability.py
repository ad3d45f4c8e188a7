"""What a store keeps when its writer dies (SIGKILL, SIGTERM), meets a full disk, or meets
another writer; real subprocesses, real signals, a real file size limit (issue 10)."""
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from data.errors import StoreError
from data.store import DONE, PENDING, compare_stores, create_store, open_store
from pipeline.cli import main
from conftest import SLOW_FLOW, TINY, cli_env, slow_flow

FORMATS = [".zarr", ".h5"]
V = 12

# A writer of V videos of real-ish rows (T=8, K=2, D=1280 float16, two streams). Each row is
# a function of the video index, so what a killed store holds can be checked exactly. It
# prints a video's index once write_video returned, i.e. once the store holds it.
WRITER = textwrap.dedent(f"""
    import sys, numpy as np
    from data.errors import StoreError
    from data.store import Layout, StreamSpec, VideoResult, create_store
    T, K, D, V = 8, 2, 1280, {V}

    def layout():
        return Layout(paths=tuple(f"c/v{{i}}.mp4" for i in range(V)), labels=np.zeros(V, np.int32), T=T,
                      streams=(StreamSpec("rgb", K, D, 0), StreamSpec("flow", K, D, 0)),
                      attrs={{"classes": ["c"]}})

    def result(i, big=None):   # big: incompressible rows (default: the odd videos)
        g = np.random.default_rng(i)
        f = (lambda: g.normal(size=(T, K, D)).astype(np.float16)) if (i % 2 if big is None else big) else \\
            (lambda: np.full((T, K, D), i, np.float16))
        return VideoResult(10 + i, 25.0, np.arange(T, dtype=np.int32) + i, np.full(T, i, np.float32),
                           {{"rgb": {{"features": f()}}, "flow": {{"features": f()}}}})

    if __name__ == "__main__":
        path, bypass = sys.argv[1], len(sys.argv) > 2
        big = set(int(x) for x in sys.argv[3].split(",")) if len(sys.argv) > 3 else None
        store = create_store(path, layout(), exist_ok=True)
        if bypass:   # no room check: the write itself meets the full disk
            import data.store as st; st.check_room = lambda *a: None
        try:
            for i in np.flatnonzero(store.status() == 0):
                store.write_video(int(i), result(int(i), None if big is None else int(i) in big))
                print(i, flush=True)
        except StoreError as err:
            print("STOPPED", err, flush=True)
            sys.exit(3)
        finally:
            store.close()
""")


@pytest.fixture
def writer(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    sys.path.insert(0, str(tmp_path))
    import importlib
    mod = importlib.import_module("writer")
    yield script, mod
    sys.path.remove(str(tmp_path))
    sys.modules.pop("writer", None)


def _reference(path, mod, result=None):
    """The store an uninterrupted writer makes (``result(i)``: video i's rows)."""
    with create_store(path, mod.layout()) as s:
        for i in range(V):
            s.write_video(i, (result or mod.result)(i))
    return path


def _assert_rows_exact(store, mod):
    """Every done row is exactly what the writer wrote for that video."""
    for i in store.done():
        np.testing.assert_array_equal(store.read("rgb/features", int(i)),
                                      mod.result(int(i)).streams["rgb"]["features"])
        assert store.read("videos/num_frames", int(i)) == 10 + i


@pytest.mark.parametrize("suffix", FORMATS)
def test_sigkill_at_random_moments_keeps_every_written_video(tmp_path, writer, suffix):
    """SIGKILL 8 times at random moments (mid-row, mid-flush, between videos): after each,
    the store opens, keeps at least every video the writer had reported, and every done row
    is exact; resuming ends equal to an uninterrupted run. Before issue 10 an HDF5 store
    killed this way kept no video at all."""
    script, mod = writer
    path, rng = tmp_path / f"k{suffix}", random.Random(10)
    kept = 0
    for _ in range(8):
        p = subprocess.Popen([sys.executable, str(script), str(path)], env=cli_env(), cwd=tmp_path,
                             stdout=subprocess.PIPE, text=True)
        reported = [p.stdout.readline()]              # it is writing: kill it a little later
        import time
        time.sleep(rng.uniform(0, 0.15))
        p.send_signal(signal.SIGKILL)
        reported += p.stdout.read().split()
        p.wait()
        with open_store(path) as s:                   # it opens, and every done row is exact ...
            done = len(s.done())
            _assert_rows_exact(s, mod)
        for cmd in ("info", "check"):                 # ... for info and check ...
            r = CliRunner().invoke(main, [cmd, str(path)])
            assert r.exception is None or isinstance(r.exception, SystemExit), (cmd, r.output)
            assert "cannot open" not in r.output, r.output
        assert done >= kept + len([r for r in reported if r.strip()]), (done, kept, reported)
        kept = done
        if kept == V:
            break
    r = subprocess.run([sys.executable, str(script), str(path)], env=cli_env(), cwd=tmp_path,
                       capture_output=True, text=True)                      # ... and so does a resume
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) == V - kept
    ref = _reference(tmp_path / f"ref{suffix}", mod)
    with open_store(path) as a, open_store(ref) as b:
        assert compare_stores(a, b) == []


def _limited(limit):
    """preexec_fn: a file size limit (ulimit -f) whose signal is ignored, so writes past it
    fail with EFBIG as they would with ENOSPC on a full disk."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("bypass", [False, True], ids=["room-check", "write-fails"])
def test_hdf5_full_disk_stops_cleanly_and_resumes(tmp_path, writer, bypass):
    """A file size limit a few videos past the empty store: the writer stops with "disk full writing video i"
    (before writing, or when the write itself fails), not a segfault (exit 139 before issue
    10); videos before i are done, i and after pending, and a resume completes the store."""
    script, mod = writer
    path = tmp_path / "full.h5"
    create_store(path, mod.layout()).close()
    limit = path.stat().st_size + (200_000 if bypass else 1_300_000)   # a few videos' worth
    args = [sys.executable, str(script), str(path)] + (["bypass", "1,2,3,4,5,6,7"] if bypass else [])
    r = subprocess.run(args, env=cli_env(), cwd=tmp_path, capture_output=True, text=True,
                       preexec_fn=_limited(limit))
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    stop = int(r.stdout.split("disk full writing video ")[1].split()[0])
    assert f"to {path}" in r.stdout and "resume" in r.stdout
    assert "Traceback" not in r.stderr
    assert stop >= 1
    run = CliRunner().invoke(main, ["extract", "--help"])   # the CLI is importable; now resume
    assert run.exit_code == 0
    r = subprocess.run([sys.executable, str(script), str(path)], env=cli_env(), cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(stop)         # the video being written had stayed pending
    with open_store(path) as s:
        assert s.status().tolist() == [DONE] * V
        for i in range(V):
            big = (1 <= i <= 7) if bypass and i < stop else None
            np.testing.assert_array_equal(s.read("flow/features", i),
                                          mod.result(i, big).streams["flow"]["features"])


def test_full_disk_while_creating_leaves_nothing(tmp_path, writer):
    """Creating an HDF5 store on a full disk: "disk full creating PATH", no half-made file."""
    script, _ = writer
    path = tmp_path / "new.h5"
    r = subprocess.run([sys.executable, str(script), str(path)], env=cli_env(), cwd=tmp_path,
                       capture_output=True, text=True, preexec_fn=_limited(4096))
    assert r.returncode == 1 and f"disk full creating {path}: File too large" in r.stderr, r.stderr
    assert [p.name for p in tmp_path.iterdir() if "new" in p.name] == []


def test_zarr_full_disk_stops_cleanly_and_resumes(tmp_path, writer):
    """Zarr writes one file per chunk: a chunk over the file size limit fails its write with
    EFBIG; the video stays pending, earlier ones done, and a resume completes it."""
    script, mod = writer
    path = tmp_path / "full.zarr"
    create_store(path, mod.layout()).close()
    r = subprocess.run([sys.executable, str(script), str(path), "bypass", "4"], env=cli_env(),
                       cwd=tmp_path, capture_output=True, text=True, preexec_fn=_limited(30_000))
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert f"disk full writing video 4 to {path}" in r.stdout and "File too large" in r.stdout
    with open_store(path) as s:
        assert s.status().tolist()[:5] == [DONE] * 4 + [PENDING]
    # the room check refuses before writing when even one row exceeds the limit
    r = subprocess.run([sys.executable, str(script), str(path)], env=cli_env(), cwd=tmp_path,
                       capture_output=True, text=True, preexec_fn=_limited(30_000))
    assert r.returncode == 3 and "file size limit" in r.stdout
    r = subprocess.run([sys.executable, str(script), str(path)], env=cli_env(), cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split()[0] == "4"
    ref = _reference(tmp_path / "ref.zarr", mod, lambda i: mod.result(i, False if i < 4 else None))
    with open_store(path) as a, open_store(ref) as b:
        assert compare_stores(a, b) == []


def test_real_enospc_on_a_small_tmpfs(tmp_path, writer):
    """The real thing where the test may mount a small tmpfs (root): both backends stop with
    "disk full" (room check at 1.2 MB, a failing write at 600 kB), done videos kept, and the
    store opens."""
    script, mod = writer
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        for size, bypass in (("1200k", []), ("600k", ["bypass", ",".join(map(str, range(V)))])):
            subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)
            for suffix in FORMATS:
                path = mnt / f"s{suffix}"
                r = subprocess.run([sys.executable, str(script), str(path), *bypass], env=cli_env(),
                                   cwd=tmp_path, capture_output=True, text=True)
                assert r.returncode == 3 and "disk full writing video" in r.stdout, (suffix, size, r.stdout, r.stderr)
                with open_store(path) as s:
                    assert len(s.done()) >= 1 and (s.status() == PENDING).any(), (suffix, size)
                subprocess.run(["rm", "-rf", str(path)], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_two_writers_on_one_hdf5_file(tmp_path, writer):
    """The second writer gets a StoreError naming the file and the other process; a reader
    meanwhile sees the writer's last flush."""
    _, mod = writer
    path = tmp_path / "two.h5"
    first = create_store(path, mod.layout())
    first.write_video(0, mod.result(0))
    code = ("import sys\nfrom data.store import open_store\nfrom data.errors import StoreError\n"
            "try:\n    open_store(sys.argv[1], 'a')\nexcept StoreError as e:\n    print(e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], env=cli_env(), capture_output=True, text=True)
    assert r.returncode == 3, r.stdout + r.stderr
    assert str(path) in r.stdout and "another process" in r.stdout and "one writer" in r.stdout
    info = subprocess.run([sys.executable, "-m", "pipeline.cli", "info", str(path)], env=cli_env(),
                          capture_output=True, text=True)
    assert info.returncode == 0 and "done 1  failed 0  pending 11" in info.stdout, info.stderr
    first.close()


def test_unopenable_hdf5_files_give_clear_errors(tmp_path):
    """Garbage, a cut copy, and a file left flagged open for writing: info, check and a
    resume answer with a one-line error naming the file and what to do, no raw OSError."""
    import h5py

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(4096))
    flagged = tmp_path / "flagged.h5"
    code = (f"import os, signal, h5py\nf = h5py.File({str(flagged)!r}, 'w', libver='latest')\n"
            "f['x'] = [1]\nf.flush()\nos.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code], env=cli_env())
    cut = tmp_path / "cut.h5"
    with h5py.File(cut, "w") as f:
        f.create_dataset("x", data=np.arange(100000))
    os.truncate(cut, cut.stat().st_size // 2)
    for path, words in [(garbage, "corrupt"), (flagged, "h5clear -s"), (cut, "shorter")]:
        for cmd in (["info"], ["check"]):
            r = CliRunner().invoke(main, [*cmd, str(path)])
            assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
            assert str(path) in r.output and words in r.output, r.output
        with pytest.raises(StoreError, match=words):
            open_store(path, "a")


# -- extraction, end to end: real videos, a real `framesel extract` killed, filled, stopped ----

CHEAP = [*TINY, "--frames", "2", "--flow-stack", "1", "--crops", "1", "--flow", "farneback", "--no-thumbnails"]


@pytest.fixture
def long_list(video_dir):
    """8 good 16-frame videos and their list (args for `framesel extract`, minus --out)."""
    from conftest import moving_texture, write_video

    root = video_dir / "videos"
    for k in range(8):
        write_video(root / "left" / f"long{k}.mp4", moving_texture(16, shift=(1, k % 3), seed=10 + k))
    (video_dir / "long.txt").write_text("".join(f"left/long{k}.mp4 0\n" for k in range(8)))
    return [str(video_dir / "long.txt"), "--root", str(root), *CHEAP]


class Progress:
    """The progress bar of a running `framesel extract`, read from its stderr: how many
    videos this run has recorded (the bar advances after each video's write)."""

    def __init__(self, proc):
        import re
        import threading

        self.proc, self.seen, self.text = proc, 0, ""

        def read():
            for chunk in iter(lambda: proc.stderr.read1(4096), b""):
                self.text += chunk.decode(errors="replace")
                counts = [int(n) for n in re.findall(r"\| *(\d+)/\d+ \[", self.text)]
                self.seen = max(counts, default=0)
        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()

    def wait_for(self, n, timeout=300):
        import time
        end = time.time() + timeout
        while self.seen < n and self.proc.poll() is None and time.time() < end:
            time.sleep(0.05)
        return self.seen >= n


def _extract_proc(args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "extract", *args], env=env or cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


@pytest.mark.slow
def test_extraction_killed_5_times_resumes_to_the_same_store(video_dir, long_list):
    """For Zarr and HDF5 alike: SIGKILL `framesel extract` 5 times at random moments (seeded)
    after it started writing, resuming after each; every kill keeps every video the run had
    recorded (before issue 10 HDF5 kept none), and the finished store is array for array the
    one an uninterrupted run makes."""
    import time

    ref = video_dir / "ref.zarr"
    r = CliRunner().invoke(main, ["extract", *long_list, "--out", str(ref), "--quiet"])
    assert r.exit_code == 0, r.output
    rng = random.Random(2026)
    for suffix in FORMATS:
        out, kept = video_dir / f"killed{suffix}", 0
        for _ in range(5):
            proc = _extract_proc([*long_list, "--out", str(out)])
            progress = Progress(proc)
            started = progress.wait_for(1)
            time.sleep(rng.uniform(0, 1.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            progress.thread.join(5)
            assert started or proc.returncode == 0, progress.text
            with open_store(out) as s:
                done = len(s.done())
            assert done >= kept + progress.seen, (suffix, done, kept, progress.seen)
            kept = done
            if kept == 8:
                break
        assert kept >= 5                        # each kill came after at least one video
        r = CliRunner().invoke(main, ["extract", *long_list, "--out", str(out), "--quiet"])
        assert r.exit_code == 0 and f"({8 - kept} processed" in r.output, r.output
        with open_store(out) as a, open_store(ref) as b:
            assert compare_stores(a, b) == [], suffix


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2", "2 --pipeline"])
def test_sigterm_closes_the_store_and_prints_the_summary(video_dir, long_list, workers):
    """Slurm preempts with SIGTERM: extraction stops after the current write (with workers:
    queued videos are cancelled, not waited for; what was computed is written first), closes
    the store, prints the summary with why it stopped, exits 1; the store resumes."""
    out = video_dir / f"term{workers.replace(' ', '')}.h5"
    # each video sleeps 0.2 s in its 2 flow pairs (tests/plugins/slow_flow.py): the signal, sent
    # after the first video, finds the run with videos left even on a loaded machine
    slow = [*long_list, *slow_flow(0.1), "--out", str(out)]
    proc = _extract_proc([*slow, "--workers", *workers.split()], env=cli_env(SLOW_FLOW))
    progress = Progress(proc)
    assert progress.wait_for(1), progress.text
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    progress.thread.join(5)
    assert proc.returncode == 1, (proc.returncode, progress.text)
    assert "STOPPED: stopped by SIGTERM" in progress.text and "/8 done, 0 failed" in progress.text
    assert "Traceback" not in progress.text
    with open_store(out) as s:
        done = len(s.done())
    assert done >= progress.seen >= 1
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "extract", *slow, "--quiet"], env=cli_env(SLOW_FLOW),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"({8 - done} processed" in r.stdout + r.stderr, r.stdout + r.stderr


def test_extraction_on_a_full_disk_ends_with_a_clear_error(video_dir, long_list):
    """`framesel extract --format hdf5` under a file size limit the first video does not fit:
    exit 1 with "disk full writing video 0 to PATH" and the summary (before issue 10: a
    segfault, exit 139, and a file no command could open); the store then resumes."""
    out = video_dir / "full.h5"
    proc = _extract_proc([*long_list, "--out", str(out), "--format", "hdf5", "--quiet"],
                         preexec_fn=_limited(30_000))
    err = proc.communicate(timeout=300)[1].decode()
    assert proc.returncode == 1, (proc.returncode, err)
    assert f"disk full writing video 0 to {out}" in err and "0/8 done" in err, err
    assert "Traceback" not in err
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and "done 0  failed 0  pending 8" in info.output, info.output
    r = CliRunner().invoke(main, ["extract", *long_list, "--out", str(out), "--quiet"])
    assert r.exit_code == 0 and "8/8 done" in r.output, r.output
