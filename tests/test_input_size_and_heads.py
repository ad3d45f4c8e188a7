"""Issue 26, items 2 and 7, through the CLI on real tiny videos (module-level imports are
only what framesel had before, so these tests run against the commit they were written on).

26.2: a backbone whose input exceeds the 340x256 frames (EfficientNet-Lite2, 260 px) failed
every video; now the frames are resized for it (recorded in the store).
26.7: a checkpoint whose head does not fit the list (an ImageNet file) or has no head was
refused; now its features are extracted, its logits marked absent, and ``framesel head``
adds the classes' logits.
"""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from data.store import open_store
from extract.backbones.resnet import ResNet
from pipeline.cli import main
from tests.peer_checkpoints import save_torchvision

TORCH_THREADS = 2


def two_videos(video_dir):
    (video_dir / "two.txt").write_text("left/v0.mp4 0\nright/v0.mp4 1\n")
    return video_dir / "two.txt"


def extract(video_dir, out, *options):
    args = ["extract", str(two_videos(video_dir)), "--root", str(video_dir / "videos"), "--out", str(out),
            "--frames", "2", "--no-thumbnails", "--quiet", *options]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_efficientnet_lite2_resizes_its_frames_to_fit_260px_crops(video_dir):
    """Issue 26.2: every video of a two-stream lite2 run is done; the store records the
    resize (340x256 -> 345x260, aspect kept) of both streams."""
    out = video_dir / "lite2.zarr"
    r = extract(video_dir, out, "--backbone", "efficientnet_lite2", "--crops", "3", "--flow", "farneback",
                "--flow-stack", "1")
    assert r.exit_code == 0, r.output
    store = open_store(out)
    assert (store.status() == 1).all()
    for stream in ("rgb", "flow"):
        resize = store.attrs["backbone"][stream]["resize"]
        assert resize["from"] == [340, 256] and resize["to"] == [345, 260], resize
        assert store.read(f"{stream}/features", 0).shape == (2, 3, 1280)
    assert "resized to 345x260" in r.output


@pytest.mark.parametrize("classes", [1000, 0])
def test_a_checkpoint_whose_head_does_not_fit_gives_features_and_head_adds_logits(video_dir, classes):
    """Issue 26.7: an ImageNet-headed (1000 classes) or head-less ResNet-18 on a 2-class list."""
    torch.manual_seed(0)
    ck = video_dir / f"imagenet_{classes}.pth"
    save_torchvision(ResNet(18, 3, classes).state_dict(), ck)
    out = video_dir / f"own_{classes}.zarr"
    r = extract(video_dir, out, "--backbone", "resnet18", "--checkpoint", f"rgb={ck}", "--streams", "rgb",
                "--flow", "none", "--crops", "1")
    assert r.exit_code == 0, r.output
    said = f"its {classes}-class head does not fit the list's 2 classes" if classes else "it has no classifier head"
    assert said in r.output and "framesel head" in r.output
    store = open_store(out)
    described = store.attrs["backbone"]["rgb"]
    assert described["num_classes"] == classes and described["logits_stored"] is False
    assert not store.has("rgb/logits") and store.read("rgb/features", 0).shape == (2, 1, 512)
    store.close()
    h = CliRunner().invoke(main, ["head", str(out), "--train", str(two_videos(video_dir)), "--epochs", "3",
                                  "--quiet"], catch_exceptions=False)
    assert h.exit_code == 0, h.output
    with open_store(out) as store:
        logits = store.read("rgb/logits", 1)
    assert logits.shape == (2, 1, 2) and np.isfinite(logits).all()
