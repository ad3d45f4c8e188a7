"""Every command meets bad inputs and full disks with one line (issue 26, Low): missing,
empty, truncated, wrong-format and wrong-schema files, read-only places, a full disk, unicode
and spaces in paths. Each gets one line naming the file and the cause, a non-zero exit, no
traceback, and what it read is left as it was (`framesel check` on every store touched).

Full disks two ways: a small real tmpfs where the test may mount one (root), and the kernel's
real ENOSPC from /dev/full everywhere (a file the command writes is a link to it)."""
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from conftest import TINY

TORCH_THREADS = 1
E = [*TINY, "--frames", "2", "--flow-stack", "1", "--crops", "1", "--flow", "farneback", "--no-thumbnails", "--quiet"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(r, *words, code=1):
    """A handled error: exit ``code``, no traceback, the last line "Error: ..." holding every
    word (the file, the cause)."""
    assert r.exit_code == code and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert "Traceback" not in r.output, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("Error: "), last
    for w in words:
        assert str(w) in last, (w, last)
    return last


def check_ok(store):
    r = cli("check", store)
    assert r.exit_code == 0 and "OK" in r.output, r.output


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A Zarr and an HDF5 store (6 done videos, features and logits), their list, a trained
    `as` checkpoint, one real video and its list."""
    from conftest import moving_texture, write_video
    from test_cli import C, V, make_store

    root = tmp_path_factory.mktemp("world")
    lst = root / "all.txt"
    lst.write_text("".join(f"c{i % C}/v{i}.mp4 {i % C}\n" for i in range(V)))
    zarr, h5 = make_store(root / "s.zarr"), make_store(root / "s.h5")
    r = cli("train", zarr, "--agent", "as", "--seeds", "1", "--train", lst, "--out", root / "as.pt", "--set", "epochs=1", "--quiet")
    assert r.exit_code == 0, r.output
    (root / "videos" / "a").mkdir(parents=True)
    write_video(root / "videos" / "a" / "v0.mp4", moving_texture(12, seed=0))
    (root / "v.txt").write_text("a/v0.mp4 0\n")
    return {"root": root, "zarr": zarr, "h5": h5, "list": lst, "agent": root / "as.pt",
            "videos": root / "videos", "vlist": root / "v.txt"}


def _bad_store(kind: str, world, where: Path) -> Path:
    """A store path that is not a readable framesel store, of the given kind."""
    if kind == "empty.h5":
        (where / "e.h5").write_bytes(b"")
        return where / "e.h5"
    if kind == "file.zarr":
        (where / "f.zarr").write_text("not a store\n")
        return where / "f.zarr"
    if kind == "cut.h5":
        data = world["h5"].read_bytes()
        (where / "cut.h5").write_bytes(data[:len(data) // 2])
        return where / "cut.h5"
    path = where / f"{kind}.zarr"
    shutil.copytree(world["zarr"], path)
    meta = path / "zarr.json"
    text = meta.read_text()
    if kind == "schema":
        doc = json.loads(text)
        doc["attributes"]["schema_version"] = 99
        meta.write_text(json.dumps(doc))
    else:
        meta.write_text(text[:len(text) // 2])
    return path


STORES = {"empty.h5": "is empty (0 bytes)", "file.zarr": "is a file, not a framesel Zarr store",
          "cut.h5": "shorter than its HDF5 superblock", "schema": "store schema version 99",
          "damaged": "zarr.json cannot be read"}


@pytest.mark.parametrize("kind", list(STORES))
@pytest.mark.parametrize("command", ["info", "check", "head", "train", "evaluate", "merge"])
def test_an_unreadable_store_is_one_line_and_left_as_it_was(world, tmp_path, kind, command):
    """Before: `head` on a 0-byte .h5 wrote a fresh HDF5 superblock into it and said "schema
    version None"; `head` on a regular file named .zarr said FileExistsError."""
    if command == "merge" and not kind.endswith("h5"):
        pytest.skip("merge joins HDF5 shard files")
    store = _bad_store(kind, world, tmp_path)
    before = sorted((p.relative_to(tmp_path), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    lst = world["list"]
    args = {"info": [store], "check": [store], "head": [store, "--train", lst, "--quiet"],
            "train": [store, "--agent", "as", "--seeds", "1", "--train", lst, "--out", tmp_path / "a.pt", "--quiet"],
            "evaluate": [store, "--test", lst, "--out", tmp_path / "rep", "--quiet"],
            "merge": [store, "--out", tmp_path / "m.h5"]}[command]
    one_line(cli(command, *args), store, STORES[kind])
    after = sorted((p.relative_to(tmp_path), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    assert after == before          # nothing written, nothing changed


LISTS = {"empty": (b"", "the list is empty"), "binary": (bytes(range(128, 256)) * 8, "not UTF-8 text")}


@pytest.mark.parametrize("kind", list(LISTS))
@pytest.mark.parametrize("command", ["extract", "head", "train", "evaluate"])
def test_an_unreadable_list_is_one_line(world, tmp_path, kind, command):
    data, words = LISTS[kind]
    lst = tmp_path / "bad list.txt"
    lst.write_bytes(data)
    z = world["zarr"]
    args = {"extract": [lst, "--root", world["videos"], "--out", tmp_path / "x.zarr", *E],
            "head": [z, "--train", lst, "--quiet"],
            "train": [z, "--agent", "as", "--seeds", "1", "--train", lst, "--out", tmp_path / "a.pt", "--quiet"],
            "evaluate": [z, "--test", lst, "--out", tmp_path / "rep", "--quiet"]}[command]
    one_line(cli(command, *args), lst, words)
    check_ok(z)


def _agent_file(kind, world, path: Path) -> Path:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("my notes\n")
    elif kind == "cut":
        data = world["agent"].read_bytes()
        path.write_bytes(data[:len(data) // 2])
    else:
        torch.save({"x": 1}, path)
    return path


AGENTS = {"empty": "is empty (0 bytes)", "text": "not a readable torch file",
          "cut": "not a readable torch file", "other": "not a framesel agent checkpoint"}


@pytest.mark.parametrize("kind", list(AGENTS))
def test_an_unreadable_agent_checkpoint_is_one_line_and_left_untouched(world, tmp_path, kind):
    ck = _agent_file(kind, world, tmp_path / "ä gent.pt")
    before = ck.read_bytes()
    one_line(cli("evaluate", world["zarr"], "--test", world["list"], "--agents", ck, "--out", tmp_path / "rep",
                 "--quiet"), ck, AGENTS[kind])
    one_line(cli("train", world["zarr"], "--agent", "as", "--seeds", "1", "--train", world["list"], "--out", ck, "--quiet"),
             ck, AGENTS[kind], "left untouched")
    assert ck.read_bytes() == before
    check_ok(world["zarr"])


@pytest.mark.parametrize("option, make, words", [
    ("--checkpoint", lambda p: p.write_text("hello"), "not a readable torch file"),
    ("--checkpoint", lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    ("--checkpoint", lambda p: p.mkdir(), "is a directory, not a file"),
    ("--classes", lambda p: p.mkdir(), "is a directory, not a file"),
    ("--classes", lambda p: p.write_text(""), "no class names"),
], ids=["checkpoint-text", "checkpoint-empty", "checkpoint-dir", "classes-dir", "classes-empty"])
def test_extract_side_files_are_one_line(world, tmp_path, option, make, words):
    """Before: --classes naming a directory said it did not exist."""
    path = tmp_path / "bad ü"
    make(path)
    value = f"rgb={path}" if option == "--checkpoint" else path
    settings = [*E[len(TINY):], "--backbone", "resnet18"] if option == "--checkpoint" else E
    one_line(cli("extract", world["vlist"], "--root", world["videos"], "--out", tmp_path / "x.zarr", *settings,
                 option, value), path, words)
    assert not (tmp_path / "x.zarr").exists()


def test_merge_out_a_directory_is_one_line(world, tmp_path):
    """Before: "adir is not a framesel Zarr store"."""
    one_line(cli("merge", world["h5"], "--out", tmp_path), tmp_path, "is a directory", ".h5")
    check_ok(world["h5"])


def test_unicode_and_spaces_in_every_path(world, tmp_path):
    from conftest import moving_texture, write_video

    root = tmp_path / "vidéos à"
    (root / "ç lass").mkdir(parents=True)
    write_video(root / "ç lass" / "vïdeo 1.mp4", moving_texture(12, seed=1))
    (root / "ç lass" / "vïdeo 2.mp4").write_bytes(b"not a video")
    lst = tmp_path / "lïst ü.txt"
    lst.write_text("ç lass/vïdeo 1.mp4 0\nç lass/vïdeo 2.mp4 0\n", encoding="utf-8")
    out = tmp_path / "störe ü.zarr"
    r = cli("extract", lst, "--root", root, "--out", out, *E)
    assert r.exit_code == 1 and "1/2 done, 1 failed" in r.output and "vïdeo 2.mp4" in r.output, r.output
    assert cli("info", out).exit_code == 0
    check_ok(out)


# ----------------------------------------------------------------------------- read-only places

@contextmanager
def read_only(path: Path):
    """``path`` (a directory, filled by the caller) read-only for the ``with`` block: a
    read-only tmpfs where the test may mount one (root ignores permission bits), else 0o555."""
    if os.geteuid() == 0:
        held = path.with_name(path.name + "-content")
        path.rename(held)
        path.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], capture_output=True).returncode:
            pytest.skip("root, but cannot mount a tmpfs here")
        try:
            for p in held.iterdir():
                (shutil.copytree if p.is_dir() else shutil.copy)(p, path / p.name)
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
    for p in modes:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield path
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def test_read_only_places_are_one_line(world, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copytree(world["zarr"], ro / "s.zarr")
    shutil.copy(world["h5"], ro / "s.h5")
    lst, z = world["list"], world["zarr"]
    with read_only(ro):
        for name in ("s.zarr", "s.h5"):       # reading works; writing says what to do
            check_ok(ro / name)
            one_line(cli("head", ro / name, "--train", lst, "--quiet"), ro / name)
        r = cli("evaluate", ro / "s.zarr", "--test", lst, "--out", tmp_path / "rep", "--quiet")
        assert r.exit_code == 0, r.output
        one_line(cli("train", z, "--agent", "as", "--seeds", "1", "--train", lst, "--out", ro / "a.pt", "--quiet"), ro / "a.pt")
        one_line(cli("evaluate", z, "--test", lst, "--out", ro / "rep", "--quiet"), ro / "rep")
        one_line(cli("extract", world["vlist"], "--root", world["videos"], "--out", ro / "x.zarr", *E), ro / "x.zarr")
        one_line(cli("merge", world["h5"], "--out", ro / "m.h5"), ro / "m.h5", "not a writable directory")
        for name in ("s.zarr", "s.h5"):
            check_ok(ro / name)


# ----------------------------------------------------------------------------- full disks

def test_dev_full_enospc_when_saving_a_checkpoint_and_a_report(world, tmp_path):
    """The kernel's real ENOSPC (/dev/full), no root needed. Before: train's save was a
    traceback (torch.save's RuntimeError "unexpected pos"), evaluate said only "No space left
    on device" without the file."""
    out = tmp_path / "a.pt"
    (tmp_path / "a.pt.tmp").symlink_to("/dev/full")
    one_line(cli("train", world["zarr"], "--agent", "as", "--seeds", "1", "--train", world["list"], "--out", out, "--set", "epochs=1",
                 "--quiet"), "disk full writing agent checkpoint", out, "No space left on device")
    assert not out.exists() and not (tmp_path / "a.pt.tmp").exists()
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "results.json").symlink_to("/dev/full")
    one_line(cli("evaluate", world["zarr"], "--test", world["list"], "--out", rep, "--quiet"),
             f"disk full writing the report to {rep}", "No space left on device", "run the same command again")
    check_ok(world["zarr"])


@pytest.fixture
def full_disk(tmp_path):
    """A 4 MiB tmpfs, and ``fill(leave)``: fill it up to ``leave`` bytes. Skips unless the test
    may mount (root)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the /dev/full test covers ENOSPC")

    def fill(leave=8192):
        (mnt / "filler").unlink(missing_ok=True)
        with open(mnt / "filler", "wb") as f:
            try:
                f.write(b"\0" * max(0, shutil.disk_usage(mnt).free - leave))
            except OSError:
                pass
    try:
        yield mnt, fill
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_stops_every_writer_with_one_line(world, full_disk):
    """A real ENOSPC. Before: `head` on HDF5 left the store's logits metadata unreadable and
    said "Disable slist on flush dest failure failed ..."; on Zarr "No space left on device"
    without a file; `train` ended in a traceback and left OUT.tmp; `evaluate` named no file;
    `demo` printed ffmpeg's last line only."""
    mnt, fill = full_disk
    for name in ("s.zarr", "s.h5"):
        (mnt / "filler").unlink(missing_ok=True)
        (shutil.copytree if name.endswith("zarr") else shutil.copy)(world[name[2:]], mnt / name)
        fill()
        one_line(cli("head", mnt / name, "--train", world["list"], "--quiet"),
                 f"disk full writing the rgb head and logits to {mnt / name}", "make room")
        check_ok(mnt / name)                          # untouched: refused before any write
    fill()
    one_line(cli("train", world["zarr"], "--agent", "as", "--seeds", "1", "--train", world["list"], "--out", mnt / "a.pt",
                 "--set", "epochs=1", "--quiet"), "disk full writing agent checkpoint", mnt / "a.pt")
    assert not (mnt / "a.pt").exists() and not (mnt / "a.pt.tmp").exists()
    fill()
    one_line(cli("evaluate", world["zarr"], "--test", world["list"], "--out", mnt / "rep", "--quiet"),
             f"disk full writing the report to {mnt / 'rep'}")
    fill()
    one_line(cli("merge", world["h5"], "--out", mnt / "m.h5"), "disk full", mnt / "m.h5")
    fill()
    one_line(cli("extract", world["vlist"], "--root", world["videos"], "--out", mnt / "x.zarr", *E),
             "disk full", mnt / "x.zarr")
    fill(200_000)
    one_line(cli("demo", "--out", mnt / "demo", "--quiet"), "disk full writing the demo video", mnt / "demo")
    for name in ("s.zarr", "s.h5"):
        check_ok(mnt / name)
