"""One contract, every backend (GUIDE §6.6): subclass StoreContract per format."""
import errno
import re

import numpy as np
import pytest

from data.errors import SchemaError, StoreError, UnknownNameError
from data.store import (DONE, FAILED, PENDING, Layout, StreamSpec, VideoCost, VideoResult, compare_stores,
                        create_store, open_store)
from conftest import TINY

T, K, D, C = 4, 2, 6, 3
STAGES = ("decode", "flow", "flow_cost", "backbone:rgb", "backbone:flow")


def make_layout(V=3, multilabel=False, maps=False, thumbs=False, cost=False):
    labels = (np.eye(C, dtype=np.uint8)[np.arange(V) % C] | np.eye(C, dtype=np.uint8)[(np.arange(V) + 1) % C]
              if multilabel else (np.arange(V) % C).astype(np.int32))
    streams = (StreamSpec("rgb", K, D, C, (2, 2, 5) if maps else None), StreamSpec("flow", K, D, 0))
    return Layout(paths=tuple(f"class é/{i}.mp4" for i in range(V)), labels=labels, T=T, streams=streams,
                  thumbnail_size=(8, 10) if thumbs else None, cost_stages=STAGES if cost else None,
                  attrs={"classes": ["a", "b", "c"], "multilabel": multilabel, "flow": {"bound": 20.0}})


def make_result(seed, maps=False, thumbs=False, cost=False):
    g = np.random.default_rng(seed)
    streams = {"rgb": {"features": g.normal(size=(T, K, D)).astype(np.float16),
                       "logits": g.normal(size=(T, K, C)).astype(np.float32)},
               "flow": {"features": g.normal(size=(T, K, D)).astype(np.float16)}}
    if maps:
        streams["rgb"]["feature_maps"] = g.normal(size=(T, K, 2, 2, 5)).astype(np.float16)
    return VideoResult(num_frames=30 + seed, fps=25.0, frame_index=np.arange(T, dtype=np.int32) * 3 + seed,
                       motion=g.random(T).astype(np.float32), streams=streams,
                       thumbnails=g.integers(0, 255, (T, 8, 10, 3), dtype=np.uint8) if thumbs else None,
                       cost=VideoCost(g.random(len(STAGES)) + 0.1, 2.5 * (seed + 1), 7, float("nan") if seed else 42.0)
                       if cost else None)


class StoreContract:
    suffix = ""

    def path(self, tmp_path, name="s"):
        return tmp_path / f"{name}{self.suffix}"

    def test_create_and_reopen(self, tmp_path):
        p = self.path(tmp_path)
        create_store(p, make_layout()).close()
        with open_store(p) as s:
            assert s.format == self.format
            assert s.num_videos == 3 and s.T == T
            assert s.paths == [f"class é/{i}.mp4" for i in range(3)]
            assert s.labels.tolist() == [0, 1, 2]
            assert s.status().tolist() == [PENDING] * 3
            assert s.attrs["classes"] == ["a", "b", "c"] and s.attrs["flow"] == {"bound": 20.0}
            assert s.streams == ["rgb", "flow"]
            assert s.shape("rgb/features") == (3, T, K, D)
            assert s.dtype("rgb/features") == np.float16

    def test_multilabel_labels(self, tmp_path):
        p = self.path(tmp_path)
        create_store(p, make_layout(multilabel=True)).close()
        with open_store(p) as s:
            assert s.labels.shape == (3, C) and s.labels.dtype == np.uint8
            assert s.labels.sum(1).tolist() == [2, 2, 2]

    def test_write_then_read(self, tmp_path):
        p = self.path(tmp_path)
        with create_store(p, make_layout(maps=True, thumbs=True)) as s:
            r = make_result(1, maps=True, thumbs=True)
            s.write_video(1, r)
        with open_store(p) as s:
            assert s.status().tolist() == [PENDING, DONE, PENDING]
            assert s.done().tolist() == [1]
            np.testing.assert_array_equal(s.read("rgb/features", 1), r.streams["rgb"]["features"])
            np.testing.assert_array_equal(s.read("rgb/logits", 1), r.streams["rgb"]["logits"])
            np.testing.assert_array_equal(s.read("rgb/feature_maps", 1), r.streams["rgb"]["feature_maps"])
            np.testing.assert_array_equal(s.read("thumbnails", 1), r.thumbnails)
            np.testing.assert_array_equal(s.read("frame_index", 1), r.frame_index)
            assert int(s.read("videos/num_frames", 1)) == 31
            assert s.read_rows("motion", [1]).shape == (1, T)
            with pytest.raises(StoreError, match="not done"):
                s.read("rgb/features", 0)

    def test_failure_is_recorded(self, tmp_path):
        p = self.path(tmp_path)
        with create_store(p, make_layout()) as s:
            s.mark_failed(2, "x.mp4: decoded 0 frames")
        with open_store(p) as s:
            assert s.status()[2] == FAILED
            assert s.errors()[2] == "x.mp4: decoded 0 frames"

    def test_a_failed_write_names_the_video_and_leaves_it_pending(self, tmp_path, monkeypatch):
        """A write the disk refuses (ENOSPC) is a StoreError naming the video and the store;
        its status is written last, so the video stays pending and a resume redoes it."""
        p = self.path(tmp_path)
        with create_store(p, make_layout()) as s:
            write_row = type(s)._write_row

            def full(self, name, i, value):
                if name == "videos/error":
                    raise OSError(errno.ENOSPC, "No space left on device")
                return write_row(self, name, i, value)
            monkeypatch.setattr(type(s), "_write_row", full)
            with pytest.raises(StoreError, match=rf"disk full writing video 1 to {re.escape(str(p))}: No space left "
                                                 r"on device \(errno 28\); video 1 stays pending"):
                s.mark_failed(1, "x.mp4: broken")
            monkeypatch.undo()
        with open_store(p) as s:
            assert s.status().tolist() == [PENDING] * 3

    def test_no_rows_read_as_an_empty_array_of_the_node(self, tmp_path):
        with create_store(self.path(tmp_path), make_layout()) as s:
            rows = s.read_rows("rgb/features", [])
            assert rows.shape == (0, T, K, D) and rows.dtype == np.float16

    def test_wrong_shape_rejected(self, tmp_path):
        with create_store(self.path(tmp_path), make_layout()) as s:
            r = make_result(0)
            r.streams["rgb"]["features"] = r.streams["rgb"]["features"][:2]
            with pytest.raises(StoreError, match="shape"):
                s.write_video(0, r)
            assert s.status()[0] == PENDING

    def test_unknown_array_rejected(self, tmp_path):
        with create_store(self.path(tmp_path), make_layout()) as s:
            r = make_result(0)
            r.streams["depth"] = {"features": np.zeros((T, K, D))}
            with pytest.raises(StoreError, match="depth"):
                s.write_video(0, r)

    def test_create_existing(self, tmp_path):
        p = self.path(tmp_path)
        create_store(p, make_layout()).close()
        with pytest.raises(StoreError, match="exists"):
            create_store(p, make_layout())
        create_store(p, make_layout(), exist_ok=True).close()

    def test_missing_store(self, tmp_path):
        with pytest.raises(StoreError, match="no store"):
            open_store(self.path(tmp_path, "nope"))
        with pytest.raises(OSError):        # typed errors also subclass builtins
            open_store(self.path(tmp_path, "nope"))

    def test_schema_version_checked(self, tmp_path):
        p = self.path(tmp_path)
        with create_store(p, make_layout()) as s:
            s.set_attrs({"schema_version": 99})
        with pytest.raises(SchemaError, match="99"):
            open_store(p)

    def test_add_logits_with_provenance(self, tmp_path):
        p = self.path(tmp_path)
        with create_store(p, make_layout()) as s:
            for i in range(3):
                s.write_video(i, make_result(i))
            logits = np.random.default_rng(0).normal(size=(3, T, K, 5)).astype(np.float32)
            s.add_logits("flow", logits, {"by": "framesel head", "seed": 0})
        with open_store(p) as s:
            np.testing.assert_array_equal(s.read_rows("flow/logits", [0, 1, 2]), logits)
            assert s.logits_provenance()["flow"]["seed"] == 0

    def test_compare(self, tmp_path):
        a, b = self.path(tmp_path, "a"), self.path(tmp_path, "b")
        for p in (a, b):
            with create_store(p, make_layout()) as s:
                s.write_video(0, make_result(0))
        with open_store(a) as x, open_store(b) as y:
            assert compare_stores(x, y) == []
        with open_store(b, "a") as y:
            y.write_video(1, make_result(1))
        with open_store(a) as x, open_store(b) as y:
            assert any("rgb/features" in d for d in compare_stores(x, y))


    def test_cost_record(self, tmp_path):
        """The optional cost/* nodes: written with the video's rows, read back, the stage
        names in the attrs, rebuilt by layout(); measured seconds never make two stores
        differ; a store without them takes a result that carries them (a resumed old store)."""
        p, q = self.path(tmp_path, "a"), self.path(tmp_path, "b")
        with create_store(p, make_layout(cost=True)) as s:
            for i in range(2):
                s.write_video(i, make_result(i, cost=True))
        with open_store(p) as s:
            assert s.attrs["cost_stages"] == list(STAGES) and s.layout().cost_stages == STAGES
            assert s.shape("cost/seconds") == (3, len(STAGES)) and s.dtype("cost/seconds") == np.float32
            r = make_result(1, cost=True).cost
            np.testing.assert_allclose(s.read("cost/seconds", 1), r.seconds.astype(np.float32))
            assert s.read_rows("cost/flow_gflops", [0, 1]).tolist() == [2.5, 5.0]
            assert s.read_rows("cost/flow_fields", [0, 1]).tolist() == [7, 7]
            its = s.read_rows("cost/flow_iterations", [0, 1])
            assert its[0] == 42.0 and np.isnan(its[1])
        with create_store(q, make_layout(cost=True)) as s:
            for i in range(2):
                other = make_result(i, cost=True)
                other.cost.seconds = other.cost.seconds * 3          # another run's timing
                s.write_video(i, other)
        with open_store(p) as x, open_store(q) as y:
            assert compare_stores(x, y) == []
            assert any("cost/seconds" in d for d in compare_stores(x, y, ignore=()))
        with create_store(self.path(tmp_path, "old"), make_layout()) as s:
            s.write_video(0, make_result(0, cost=True))              # no cost/* here: dropped
            assert not s.has("cost/seconds") and s.status()[0] == DONE
        with create_store(self.path(tmp_path, "c"), make_layout(cost=True)) as s:
            with pytest.raises(StoreError, match="cost/"):
                s.write_video(0, make_result(0))                     # a store with them requires them


class TestZarr(StoreContract):
    suffix, format = ".zarr", "zarr"


class TestHDF5(StoreContract):
    suffix, format = ".h5", "hdf5"


def test_zarr_and_hdf5_hold_the_same(tmp_path):
    stores = []
    for suffix in (".zarr", ".h5"):
        s = create_store(tmp_path / f"x{suffix}", make_layout())
        s.write_video(0, make_result(0))
        s.mark_failed(1, "bad")
        stores.append(s)
    assert compare_stores(*stores) == []
    assert stores[0].attrs == stores[1].attrs


@pytest.mark.parametrize("cost", [False, True])
def test_hdf5_shards_merge(tmp_path, cost):
    from data.store_merge import merge_stores, shard_path
    final = tmp_path / "m.h5"
    parts = [shard_path(final, k, 2) for k in (1, 2)]
    assert parts[0].name == "m.shard-1-of-2.h5"
    for k, p in enumerate(parts):
        with create_store(p, make_layout(cost=cost)) as s:
            for i in range(k, 3, 2):
                s.write_video(i, make_result(i, cost=cost))
    counts = merge_stores(parts, final)
    assert counts == {"done": 3, "failed": 0}
    ref = create_store(tmp_path / "ref.h5", make_layout(cost=cost))
    for i in range(3):
        ref.write_video(i, make_result(i, cost=cost))
    with open_store(final) as m:
        assert compare_stores(m, ref) == []
        assert m.has("cost/seconds") == cost
        if cost:    # the merge carries the measured seconds too (compare_stores leaves them out)
            assert compare_stores(m, ref, ignore=()) == []
            assert m.attrs["cost_stages"] == list(STAGES)


# -- merge (issue 10): what determines the features, rows by path, --out checked first ------

def shard_layout(order=None, labels=None, flow="tvl1", shard="1/2"):
    """A CLI-like layout: settings, hashes, backbone and flow as `framesel extract` records
    them; ``order`` permutes the list, ``labels`` replaces its labels (an edited list)."""
    base = make_layout(V=4)
    order = list(range(4)) if order is None else order
    settings = {"frames": T, "crops": K, "flow": {"algorithm": flow}}
    attrs = dict(base.attrs, settings=settings, config_sha256=f"sha-{flow}",
                 list_sha256="list-" + "".join(map(str, order)) + str(labels),
                 flow={"algorithm": flow, "bound": 20.0, "quantize": False, "params": {}},
                 backbone={"rgb": {"sha256": "abc"}, "flow": {"sha256": "def"}},
                 command=f"framesel extract list.txt --shard {shard} --format hdf5",
                 created=f"2026-12-01T00:0{shard[0]}:00", shard=shard)
    lab = base.labels[order] if labels is None else np.asarray(labels, np.int32)
    return Layout(tuple(base.paths[i] for i in order), lab, T, base.streams, None, attrs)


def _write(path, layout, videos):
    """Write make_result(<original index of the path>) for the given rows of ``layout``."""
    with create_store(path, layout) as s:
        for row in videos:
            s.write_video(row, make_result(int(layout.paths[row].split("/")[1][0])))
    return path


def test_merge_shards_whose_command_created_and_shard_differ(tmp_path):
    from data.store_merge import merge_stores
    a = _write(tmp_path / "a.h5", shard_layout(shard="1/2"), [0, 2])
    b = _write(tmp_path / "b.h5", shard_layout(shard="2/2"), [1, 3])
    assert merge_stores([a, b], tmp_path / "m.h5") == {"done": 4, "failed": 0}
    ref = _write(tmp_path / "ref.h5", shard_layout(), range(4))
    with open_store(tmp_path / "m.h5") as m, open_store(ref) as r:
        assert compare_stores(m, r) == []
        assert "shard" not in m.attrs


def test_merge_refuses_other_settings_naming_them(tmp_path):
    from data.store_merge import merge_stores
    a = _write(tmp_path / "a.h5", shard_layout(), [0])
    b = _write(tmp_path / "b.h5", shard_layout(flow="dis"), [1])
    with pytest.raises(StoreError, match=r"b\.h5 was made with other settings .*"
                                         r"settings\.flow\.algorithm 'dis' vs 'tvl1'.*cannot merge"):
        merge_stores([a, b], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_merge_maps_rows_by_path_from_an_edited_list(tmp_path):
    """A source made from the same videos in another order lands row by row under the same
    path; one whose label for a path differs is refused, naming the path."""
    from data.store_merge import merge_stores
    a = _write(tmp_path / "a.h5", shard_layout(), [0, 1])
    b = _write(tmp_path / "b.h5", shard_layout(order=[3, 2, 1, 0]), [0, 1])   # paths 3 and 2
    merge_stores([a, b], tmp_path / "m.h5")
    ref = _write(tmp_path / "ref.h5", shard_layout(), range(4))
    with open_store(tmp_path / "m.h5") as m, open_store(ref) as r:
        assert compare_stores(m, r) == []
    relabelled = _write(tmp_path / "c.h5", shard_layout(labels=[0, 1, 0, 0]), [2])
    with pytest.raises(StoreError, match=r"c\.h5: 1 video\(s\) have another label .*class é/2\.mp4"):
        merge_stores([relabelled], tmp_path / "m.h5")


def test_merge_into_an_existing_out_checks_it_first_and_leaves_it_untouched(tmp_path):
    """A --flow dis source into a TV-L1 store is refused before anything is written."""
    import hashlib

    from data.store_merge import merge_stores
    out = _write(tmp_path / "out.h5", shard_layout(), [0])
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    dis = _write(tmp_path / "dis.h5", shard_layout(flow="dis"), [1, 2])
    with pytest.raises(StoreError, match=r"dis\.h5 was made with other settings than .*out\.h5.*flow"):
        merge_stores([dis], out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    with open_store(out) as s:
        assert s.attrs["flow"]["algorithm"] == "tvl1" and s.status().tolist() == [DONE, 0, 0, 0]


@pytest.mark.slow
def test_cli_made_hdf5_shards_merge_and_other_settings_are_named(video_dir, monkeypatch):
    """`framesel extract --shard k/2 --format hdf5` twice, as a user types it (each records
    its own command line), then `framesel merge`: before issue 10 refused as "other
    settings" because the commands differ. A shard made with --flow dis is refused with the
    differing keys named, and the --out left as it was."""
    import sys

    from click.testing import CliRunner

    from pipeline.cli import main

    fast = [*TINY, "--frames", "2", "--flow-stack", "1", "--crops", "1", "--no-thumbnails", "--quiet"]
    final = video_dir / "m.h5"
    base = ["extract", str(video_dir / "list.txt"), "--root", str(video_dir / "videos"), *fast,
            "--out", str(final), "--format", "hdf5"]

    def extract(*extra):
        argv = [*base, *extra]
        monkeypatch.setattr(sys, "argv", ["framesel", *argv])   # what the store records
        return CliRunner().invoke(main, argv)

    for k in (1, 2):
        extract("--flow", "farneback", "--shard", f"{k}/2")
    parts = [str(video_dir / f"m.shard-{k}-of-2.h5") for k in (1, 2)]
    with open_store(parts[0]) as a, open_store(parts[1]) as b:
        assert a.attrs["command"] != b.attrs["command"] and "--shard 1/2" in a.attrs["command"]
    r = CliRunner().invoke(main, ["merge", *parts, "--out", str(final)])
    assert r.exit_code == 0, r.output
    assert "merged 4 done and 2 failed" in r.output
    with open_store(final) as m:
        assert m.status().tolist() == [DONE, DONE, FAILED, DONE, FAILED, DONE]
        for part in parts:
            with open_store(part) as p:
                for i in p.done():
                    np.testing.assert_array_equal(m.read("flow/features", int(i)), p.read("flow/features", int(i)))
    dis = video_dir / "m.shard-2-of-2.h5"
    dis.unlink()
    extract("--flow", "dis", "--shard", "2/2")
    before = final.read_bytes()
    r = CliRunner().invoke(main, ["merge", str(dis), "--out", str(final)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "other settings" in r.output and "settings.flow.algorithm" in r.output
    assert final.read_bytes() == before


def test_an_unknown_format_is_named_with_the_known_ones(tmp_path):
    with pytest.raises(UnknownNameError, match="parquet"):
        create_store(tmp_path / "s.x", make_layout(), format="parquet")
