"""A store never lies about its contents: a missing or damaged chunk, damaged metadata,
logits missing for late videos, lost provenance and bad paths are all reported by name."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agents.from_store import load_states
from data.errors import StoreError
from data.store import DONE, Layout, StreamSpec, VideoResult, create_store, open_store
from pipeline.cli import main

TORCH_THREADS = 1
T, K, D, C = 3, 1, 256, 3     # D large enough that HDF5 compresses (filters) the chunk


def layout(V=4, paths=None):
    streams = (StreamSpec("rgb", K, D, C), StreamSpec("flow", K, D, 0))
    return Layout(paths=tuple(paths or [f"c{i % C}/v{i}.mp4" for i in range(V)]),
                  labels=(np.arange(V) % C).astype(np.int32), T=T, streams=streams,
                  thumbnail_size=(4, 4), attrs={"classes": ["a", "b", "c"], "multilabel": False})


def result(i, static=False):
    """Video ``i``'s rows; ``static``: a video whose motion and thumbnails are all zero."""
    g = np.random.default_rng(i)
    protos = np.random.default_rng(99).normal(size=(C, D))
    feats = np.maximum(protos[i % C] + 0.3 * g.normal(size=(T, K, D)), 0).astype(np.float16)   # ReLU-like
    return VideoResult(num_frames=10, fps=25.0, frame_index=np.array([0, 4, 8], np.int32),
                       motion=np.zeros(T, np.float32) if static else g.random(T).astype(np.float32),
                       streams={"rgb": {"features": feats, "logits": g.normal(size=(T, K, C)).astype(np.float32)},
                                "flow": {"features": feats[:, :, ::-1].copy()}},
                       thumbnails=np.zeros((T, 4, 4, 3), np.uint8) if static
                       else g.integers(0, 255, (T, 4, 4, 3), dtype=np.uint8))


def build(path, V=4, done=None, paths=None):
    with create_store(path, layout(V, paths)) as s:
        for i in (range(V) if done is None else done):
            s.write_video(i, result(i, static=(i == 1)))
    return path


def write_list(path, rows):
    path.write_text("".join(f"c{i % C}/v{i}.mp4 {i % C}\n" for i in rows))
    return path


def cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


def chunk(store_path, name, i):
    with open_store(store_path) as s:
        return Path(s._chunk_location(name, i))


@pytest.fixture(params=[".zarr", ".h5"])
def suffix(request):
    return request.param


# -- 1. missing chunks ----------------------------------------------------------------------
def test_all_zero_rows_still_have_their_chunks(tmp_path):
    p = build(tmp_path / "s.zarr")
    for name in ("motion", "thumbnails"):
        assert chunk(p, name, 1).exists(), name       # zarr 3 skipped fill-valued chunks
    assert cli("check", p).exit_code == 0


@pytest.mark.parametrize("name", ["rgb/features", "rgb/logits", "motion"])
def test_missing_zarr_chunk_is_an_error(tmp_path, name):
    p = build(tmp_path / "s.zarr")
    lost = chunk(p, name, 2)
    lost.unlink()
    r = cli("check", p)
    assert r.exit_code == 1 and name in r.output and "video 2" in r.output and str(lost) in r.output
    with open_store(p) as s:
        with pytest.raises(StoreError, match=f"{name} of video 2 .*missing"):
            s.read(name, 2)
        with pytest.raises(StoreError, match=str(lost)):
            s.read_rows(name, [0, 2])
        if name != "motion":
            with pytest.raises(StoreError, match=name):
                load_states(s, "rgb", [0, 1, 2])
        np.testing.assert_array_equal(s.read(name, 3), s.read(name, 3))   # others still read


def test_train_and_evaluate_on_a_missing_chunk_exit_cleanly(tmp_path):
    p = build(tmp_path / "s.zarr")
    chunk(p, "rgb/logits", 0).unlink()
    videos = write_list(tmp_path / "l.txt", range(4))
    r = cli("train", p, "--agent", "as", "--train", videos, "--out", tmp_path / "a.pt", "--set", "epochs=1", "--quiet")
    assert r.exit_code == 1 and "rgb/logits of video 0" in r.output and "missing" in r.output
    r = cli("evaluate", p, "--test", videos, "--out", tmp_path / "rep", "--m", "1,2", "--streams", "rgb")
    assert r.exit_code == 1 and "rgb/logits of video 0" in r.output and "missing" in r.output


def test_unallocated_hdf5_chunk_of_a_done_row(tmp_path):
    """A done status whose rows never reached the file (a lost write): HDF5 allocates every
    written chunk, so an unallocated one is a loss."""
    p = build(tmp_path / "s.h5", done=[0, 1])
    with open_store(p, "a") as s:
        s._write_row("videos/status", 2, DONE)
        s._write_row("videos/num_frames", 2, 10)
    r = cli("check", p)
    assert r.exit_code == 1 and "rgb/features of video 2" in r.output and "missing" in r.output
    with open_store(p) as s, pytest.raises(StoreError, match="rgb/features of video 2"):
        s.read("rgb/features", 2)


def test_old_store_rows_equal_to_fill_are_accepted(tmp_path):
    """Arrays created before chunks were always written: a missing motion chunk may be a
    static video; a missing features chunk never is."""
    p = build(tmp_path / "s.zarr")
    for name in ("motion", "rgb/features"):
        meta = p / name / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["attributes"].pop("framesel_all_chunks_written")
        meta.write_text(json.dumps(doc))
        chunk(p, name, 1).unlink()
    with open_store(p) as s:
        assert s.read("motion", 1).tolist() == [0, 0, 0]
        with pytest.raises(StoreError, match="rgb/features of video 1"):
            s.read("rgb/features", 1)


# -- 2. damaged chunks ----------------------------------------------------------------------
def _damage(store_path, name, i, truncate=False):
    """Overwrite row ``i``'s stored chunk with 0xff bytes, or (Zarr) cut it in half: a short
    blosc frame may even decode, into garbage; ``check`` still finds it from the header."""
    if store_path.suffix == ".zarr":
        f = chunk(store_path, name, i)
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2] if truncate else b"\xff" * len(data))
        return
    with open_store(store_path) as s:
        info = s._dataset(name).id.get_chunk_info_by_coord((i,) + (0,) * (len(s.shape(name)) - 1))
    with open(store_path, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)


def test_damaged_chunk_is_reported_by_name_and_checking_goes_on(tmp_path, suffix):
    p = build(tmp_path / f"s{suffix}")
    _damage(p, "rgb/features", 1)
    second = "thumbnails" if suffix == ".zarr" else "flow/features"   # HDF5 stores incompressible
    _damage(p, second, 3, truncate=True)                             # chunks unfiltered: no check
    r = cli("check", p)
    assert r.exit_code == 1, r.output
    problems = [ln for ln in r.output.splitlines() if ln.startswith("PROBLEM")]
    assert any("rgb/features of video 1" in ln and str(p) in ln for ln in problems), r.output
    assert any(f"{second} of video 3" in ln for ln in problems), r.output
    assert len(problems) == 2 and "Traceback" not in r.output
    with open_store(p) as s:
        with pytest.raises(StoreError, match="rgb/features of video 1 .*cannot be"):
            s.read_rows("rgb/features", [0, 1])
        with pytest.raises(StoreError, match="rgb/features of video 1"):
            load_states(s, "rgb", [0, 1])
    r = cli("train", p, "--agent", "as", "--train", write_list(tmp_path / "l.txt", range(4)),
            "--out", tmp_path / "a.pt", "--set", "epochs=1", "--quiet")
    assert r.exit_code == 1 and "rgb/features of video 1" in r.output


# -- 3. damaged metadata --------------------------------------------------------------------
def test_damaged_array_metadata_names_the_file(tmp_path):
    p = build(tmp_path / "s.zarr")
    meta = p / "rgb" / "features" / "zarr.json"
    meta.write_text('{"zarr_format": 3, ')
    chunk(p, "flow/features", 2).unlink()
    r = cli("info", p)
    assert r.exit_code == 0 and "BROKEN" in r.output and str(meta) in r.output
    assert "done 4" in r.output                    # the rest is still summarised
    r = cli("check", p)
    assert r.exit_code == 1 and str(meta) in r.output
    assert "flow/features of video 2" in r.output          # the other arrays are still checked
    r = cli("train", p, "--agent", "as", "--train", write_list(tmp_path / "l.txt", range(4)),
            "--out", tmp_path / "a.pt", "--quiet")
    assert r.exit_code == 1 and str(meta) in r.output and "JSONDecodeError" in r.output


def test_damaged_group_and_root_metadata(tmp_path):
    p = build(tmp_path / "s.zarr")
    (p / "rgb" / "zarr.json").write_text("not json")
    r = cli("info", p)
    assert r.exit_code == 0 and str(p / "rgb" / "zarr.json") in r.output
    assert "rgb/features" in r.output              # its arrays are still listed
    assert cli("check", p).exit_code == 1
    (p / "zarr.json").write_text("{")
    for command in ("info", "check"):
        r = cli(command, p)
        assert r.exit_code == 1 and str(p / "zarr.json") in r.output and "cannot be read" in r.output
    (p / "zarr.json").unlink()
    r = cli("info", p)
    assert r.exit_code == 1 and str(p / "zarr.json") in r.output and "missing" in r.output


# -- 4. logits of videos extracted after `head` -----------------------------------------------
def test_videos_extracted_after_head_are_refused_until_head_fills_them(tmp_path, suffix):
    p = build(tmp_path / f"s{suffix}", V=5, done=[0, 1, 2, 3])
    train = write_list(tmp_path / "train.txt", [0, 1, 2])
    assert cli("head", p, "--train", train, "--epochs", "3", "--quiet").exit_code == 0
    with open_store(p) as s:
        before = s.logits_provenance()
        first = s.read_rows("flow/logits", [0, 1, 2, 3])
    with open_store(p, "a") as s:                  # a shard still running finishes video 4
        s.write_video(4, result(4))
    r = cli("check", p)
    assert r.exit_code == 1 and "1 done videos have no flow logits" in r.output and "c1/v4.mp4" in r.output
    assert "no rgb logits" in r.output            # the backbone's logits, not the head's
    r = cli("train", p, "--agent", "as", "--stream", "flow", "--train", write_list(tmp_path / "all.txt", range(5)),
            "--out", tmp_path / "a.pt", "--set", "epochs=1", "--quiet")
    assert r.exit_code == 1 and "extracted after `framesel head` ran; run `framesel head" in r.output
    r = cli("evaluate", p, "--test", tmp_path / "all.txt", "--out", tmp_path / "rep", "--m", "1,2", "--streams", "flow")
    assert r.exit_code == 1 and "extracted after `framesel head` ran" in r.output
    with open_store(p) as s, pytest.raises(StoreError, match="1 of 5 videos have no flow logits"):
        load_states(s, "flow", np.arange(5))
    # The same command again reuses the recorded head: only video 4 is written.
    assert cli("head", p, "--train", train, "--epochs", "3", "--quiet").exit_code == 0
    assert cli("check", p).exit_code == 0
    with open_store(p) as s:
        assert s.logits_provenance() == before
        np.testing.assert_array_equal(s.read_rows("flow/logits", [0, 1, 2, 3]), first)
        assert s.logits_written("flow").all() and np.abs(s.read("flow/logits", 4)).sum() > 0
        assert load_states(s, "flow", np.arange(5)).logits.shape == (5, T, K, C)


def test_head_with_other_settings_retrains_every_row(tmp_path):
    p = build(tmp_path / "s.zarr")
    train = write_list(tmp_path / "train.txt", [0, 1, 2])
    assert cli("head", p, "--train", train, "--epochs", "2", "--streams", "flow", "--quiet").exit_code == 0
    with open_store(p) as s:
        a = s.read_rows("flow/logits", range(4))
    assert cli("head", p, "--train", train, "--epochs", "2", "--seed", "1", "--streams", "flow",
               "--quiet").exit_code == 0
    with open_store(p) as s:
        assert not np.array_equal(a, s.read_rows("flow/logits", range(4)))
        assert s.logits_provenance()["flow"]["seed"] == 1 and s.logits_written("flow").all()


# -- 5. concurrent `head` runs on different streams ------------------------------------------
def test_concurrent_heads_on_two_streams_keep_both(tmp_path):
    p = build(tmp_path / "s.zarr", V=6)
    train = write_list(tmp_path / "train.txt", range(6))
    env = dict(os.environ, OMP_NUM_THREADS="1", CI="1")
    code = "import sys; from pipeline.cli import main; main(sys.argv[1:])"
    procs = [subprocess.Popen([sys.executable, "-c", code, "head", str(p), "--train", str(train),
                               "--streams", stream, "--epochs", "40", "--quiet"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for stream in ("rgb", "flow")]
    outs = [proc.communicate(timeout=300)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    with open_store(p) as s:
        prov = s.logits_provenance()
        assert set(prov) == {"rgb", "flow"} and all(v["by"] == "framesel head" for v in prov.values())
        assert s.has("rgb/logits") and s.has("flow/logits") and s.dtype("flow/logits") == np.float32
        assert "logits_provenance" not in s.attrs        # the root attrs are no one's to race on
    assert cli("check", p).exit_code == 0


def test_provenance_of_old_stores_still_reads(tmp_path):
    p = build(tmp_path / "s.zarr")
    with open_store(p, "a") as s:
        s.set_attrs({"logits_provenance": {"rgb": {"by": "framesel head", "created": "2025"}}})
    with open_store(p) as s:
        assert s.logits_provenance() == {"rgb": {"by": "framesel head", "created": "2025"}}
    assert "framesel head (2025)" in cli("info", p).output


# -- 6. paths -----------------------------------------------------------------------------------
def test_check_flags_empty_and_duplicate_paths(tmp_path):
    p = build(tmp_path / "s.zarr", paths=["", " ", "a.mp4", "a.mp4"])
    r = cli("check", p)
    assert r.exit_code == 1
    assert "video 0: empty path" in r.output and "video 1: empty path" in r.output
    assert "'a.mp4' 2 times" in r.output


def test_damaged_hdf5_object_header_names_the_array(tmp_path):
    import h5py

    p = build(tmp_path / "s.h5")
    with h5py.File(p) as f:
        addr = h5py.h5o.get_info(f["rgb/features"].id).addr
    with open(p, "r+b") as f:
        f.seek(addr)
        f.write(b"\xff" * 64)
    r = cli("info", p)
    assert r.exit_code == 0 and "BROKEN" in r.output and "rgb/features" in r.output and "done 4" in r.output
    r = cli("check", p)
    assert r.exit_code == 1 and "metadata of array rgb/features cannot be read" in r.output
    assert "no array" not in r.output
    with open_store(p) as s, pytest.raises(StoreError, match="metadata of array rgb/features"):
        s.read_rows("rgb/features", [0])
