"""The device pipeline, for real: decode workers feeding one device process on real clips,
its stores array-for-array equal to the sequential path's; the device stage's own pieces
(OpenCV's grayscale in torch, cross-video groups, lazily cut crops)."""
import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, shared_data

from data.errors import VideoError
from data.store import DONE, FAILED, compare_stores, open_store
from extract import crops, flow
from extract.device import DeviceStage, _Concat, _CropRows, grayscale, grayscale_fixed_point
from extract.schedule import take_group
from extract.prepare import prepare_video
from extract.video import Models, VideoSettings, extract_video
from pipeline.cli import main

FAST = [*TINY, "--frames", "4", "--flow-stack", "2", "--crops", "3", "--flow", "farneback", "--quiet"]


def test_grayscale_is_opencvs_on_every_colour():
    rgb = np.stack(np.meshgrid(*[np.arange(256)] * 3, indexing="ij"), -1).astype(np.uint8).reshape(256, 65536, 3)
    want = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(grayscale_fixed_point(torch.from_numpy(rgb)[None])[0].numpy(), want)   # a GPU's way
    assert np.array_equal(grayscale(torch.from_numpy(rgb)[None])[0].numpy(), want)


def test_crop_rows_cut_only_what_a_batch_asks_and_match_the_whole_crop():
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((5, 2, 40, 50, 2)).astype(np.float32))
    boxes = crops.crop_boxes(50, 40, 32, 10)
    whole = crops.crop_flow(x, boxes, 32).reshape(50, 2, 32, 32, 2)
    rows = _CropRows(x, boxes, 32, crops.crop_flow, lambda c: c)
    assert len(rows) == 50
    for a, b in [(0, 16), (16, 32), (45, 50), (7, 8)]:
        assert torch.equal(rows[a:b], whole[a:b])
    both = _Concat([rows, _CropRows(x[:2], boxes, 32, crops.crop_flow, lambda c: c)])
    assert len(both) == 70 and torch.equal(both[40:60], torch.cat([whole[40:50], whole[:10]]))


def test_numpy_and_tensor_crops_agree_and_flips_negate_x():
    f = np.random.default_rng(1).standard_normal((2, 1, 30, 40, 2)).astype(np.float32)
    boxes = crops.crop_boxes(40, 30, 24, 10)
    a, b = crops.crop_flow(f, boxes, 24), crops.crop_flow(torch.from_numpy(f), boxes, 24).numpy()
    assert np.array_equal(a, b)
    assert np.array_equal(a[:, 5, ..., 0], -a[:, 0, :, :, ::-1, 0])


def test_groups_fill_a_gpu_batch_and_stay_single_on_a_cpu():
    class Stage:
        settings = VideoSettings(frames=4, crops=1, batch_size=16,
                                 flow=flow.FlowConfig("tvl1-torch", params=(("batch_size", 20),)))
        cross_video = True

    def video(pairs):
        return type("P", (), {"pairs": np.zeros((pairs, 2)), "frame_index": np.zeros(4), "nbytes": 10})()
    ready = [(i, video(8)) for i in range(6)]
    assert [i for i, _ in take_group(ready, Stage)] == [0, 1, 2, 3]   # 16 rows need 4 videos; 24 pairs >= 20
    Stage.cross_video = False
    assert [i for i, _ in take_group(ready, Stage)] == [4] and len(ready) == 1


@pytest.fixture(scope="module")
def fight_clips(tmp_path_factory):
    """Three real fight clips, a damaged one that still decodes (with warnings), a file that
    is no video and a missing one, as an mmaction2 list."""
    fight = shared_data("fight")
    corrupt = shared_data("fixtures", "corrupted.mp4")
    d = tmp_path_factory.mktemp("clips")
    lines = (fight / "test.txt").read_text().split("\n")[:3]
    (d / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    lines += [f"{corrupt} 0", f"{d / 'noise.mp4'} 1", f"{fight / 'videos' / 'not-there.mp4'} 1"]
    (d / "list.txt").write_text("\n".join(ln if ln.startswith("/") else f"{fight / ln.split()[0]} {ln.split()[1]}"
                                          for ln in lines if ln.strip()) + "\n")
    (d / "classes.txt").write_text((fight / "classes.txt").read_text())
    return d


def test_device_pipeline_with_two_decode_workers_equals_the_sequential_store(fight_clips):
    base = [str(fight_clips / "list.txt"), "--classes", str(fight_clips / "classes.txt"), *FAST]
    runs = {}
    for name, extra in (("seq", []), ("pipe", ["--workers", "2", "--pipeline"])):
        out = fight_clips / f"{name}.zarr"
        r = CliRunner().invoke(main, ["extract", *base, "--out", str(out), *extra], catch_exceptions=False)
        assert r.exit_code == 1 and "4/6 done, 2 failed" in r.output, r.output
        runs[name] = out
    assert "device busy" in r.output
    with open_store(runs["seq"]) as a, open_store(runs["pipe"]) as b:
        assert a.status().tolist() == [DONE, DONE, DONE, DONE, FAILED, FAILED]
        assert compare_stores(a, b) == []          # atol 0: array for array (cost/seconds left out)
        assert b.attrs["run"]["device_pipeline"] is True
        for store in (a, b):                       # seconds per stage, measured either way
            sec = store.read_rows("cost/seconds", store.done())
            assert (sec[:, [0, 1, 3, 4]] > 0).all(), sec
        assert "noise.mp4" in b.errors()[4] and "not-there.mp4" in b.errors()[5]


def test_a_cross_video_group_gives_each_video_its_own_rows(fight_clips):
    """Several videos in one device group (a GPU's way, forced here on the CPU): flow is
    the same, features within float rounding of batches that span videos."""
    settings = VideoSettings(frames=4, flow_stack=2, crops=3, flow=flow.FlowConfig("farneback"),
                             thumbnail_size=None)
    models = Models(settings, "cpu", 2)
    paths = [ln.split()[0] for ln in (fight_clips / "list.txt").read_text().split("\n")[:3]]
    prepared = [prepare_video(p, settings) for p in paths]
    alone = [extract_video(p, settings, models)[0] for p in paths]
    stage = DeviceStage(settings, models)
    together = stage._run(prepared)
    for one, (res, _), p in zip(alone, together, prepared):
        assert np.array_equal(one.motion, res.motion) and np.array_equal(one.frame_index, res.frame_index)
        # a group's flow and backbone seconds are split over its videos by pairs and crops;
        # the flow GFLOPs are each video's own fields
        assert res.cost.flow_fields == one.cost.flow_fields == len(p.pairs)
        assert res.cost.flow_gflops == pytest.approx(one.cost.flow_gflops)
        assert (np.delete(res.cost.seconds, 2) > 0).all() and res.cost.seconds[0] == pytest.approx(p.seconds)
        for s in ("rgb", "flow"):
            np.testing.assert_allclose(res.streams[s]["features"].astype(np.float32),
                                       one.streams[s]["features"].astype(np.float32), atol=2e-3)


def test_a_group_with_a_failing_video_fails_only_that_video(fight_clips):
    settings = VideoSettings(frames=4, flow_stack=2, crops=1, flow=flow.FlowConfig("farneback"))
    models = Models(settings, "cpu", 2)
    path = (fight_clips / "list.txt").read_text().split()[0]
    good = prepare_video(path, settings)
    bad = prepare_video(path, settings)
    bad.pairs = bad.pairs + 10_000                  # indices past its frames: the device stage raises
    stage = DeviceStage(settings, models)
    out = stage.run([good, bad])
    assert isinstance(out[1], VideoError) and "IndexError" in str(out[1]) and path in str(out[1])
    assert not isinstance(out[0], VideoError) and stage.runs == 3 and stage.busy > 0
