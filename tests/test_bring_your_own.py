"""A researcher's own two-stream ResNet-50 (issue 12), end to end on real fight clips: one
``framesel extract`` with mmaction2-written RGB and flow files, the layout and preset named
on the console and recorded in the store, and the stored RGB features equal to the
reference network on the same crops scaled by hand the way mmaction2 feeds it."""
import numpy as np
import torch
from click.testing import CliRunner

from data.store import open_store
from extract import crops, decode, sampling
from extract.backbones.resnet import ResNet
from pipeline.cli import main
from tests.conftest import shared_data
from tests.peer_checkpoints import save_mmaction2

T, L = 2, 2


def trained_looking(in_channels, seed):
    """A ResNet-50 with a 2-class head and BatchNorm statistics away from (0, 1)."""
    torch.manual_seed(seed)
    net = ResNet(50, in_channels, 2).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def test_own_resnet50_pair_extracts_real_fight_clips(tmp_path):
    root = shared_data("fight")
    videos = ["videos/fight/fi013.mp4 1", "videos/noFight/nofi013.mp4 0"]
    if not all((root / v.split()[0]).exists() for v in videos):
        videos = [ln for ln in (root / "test.txt").read_text().splitlines() if ln.strip()][:2]
    (tmp_path / "list.txt").write_text("\n".join(videos) + "\n")
    rgb, flow = trained_looking(3, 0), trained_looking(2 * L, 1)
    save_mmaction2(rgb.state_dict(), tmp_path / "tsn_r50_rgb.pth")
    save_mmaction2(flow.state_dict(), tmp_path / "tsn_r50_flow.pth")
    out = tmp_path / "own.zarr"
    r = CliRunner().invoke(main, [
        "extract", str(tmp_path / "list.txt"), "--root", str(root), "--classes", str(root / "classes.txt"),
        "--out", str(out), "--backbone", "resnet50", "--checkpoint", f"rgb={tmp_path / 'tsn_r50_rgb.pth'}",
        "--checkpoint", f"flow={tmp_path / 'tsn_r50_flow.pth'}", "--frames", str(T), "--flow-stack", str(L),
        "--crops", "1", "--flow", "farneback", "--no-thumbnails", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    for stream in ("rgb", "flow"):
        assert f"{stream}: resnet50:tsn_r50_{stream} (mmaction2 layout, preset mmaction2, 2-class head" in r.output
    store = open_store(out)
    described = store.attrs["backbone"]
    assert described["flow"]["in_channels"] == 2 * L and described["rgb"]["preset"]["name"] == "mmaction2"
    assert described["rgb"]["layout"] == "mmaction2" and len(described["rgb"]["sha256"]) == 64
    info = CliRunner().invoke(main, ["info", str(out)])
    assert "mmaction2 layout, preset mmaction2" in info.output
    feats = store.read("rgb/features", 0)                      # (T, 1, 2048) float16
    logits = store.read("rgb/logits", 0)                       # (T, 1, 2) float32: the head's, stored
    assert feats.shape == (T, 1, 2048) and logits.shape == (T, 1, 2)
    assert store.read("flow/logits", 0).shape == (T, 1, 2)

    video = decode.decode(str(root / videos[0].split()[0]), (340, 256))
    samp = sampling.tsn_positions(video.frames.shape[0], T, L)
    crop = crops.crop_frames(video.frames[samp.frame_index], crops.crop_boxes(340, 256, 224, 1), 224)
    x = crop.reshape(-1, 224, 224, 3).astype(np.float32)
    x = (x - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]    # mmaction2's data_preprocessor
    with torch.inference_mode():
        want = rgb.feature_maps(torch.from_numpy(x).float().permute(0, 3, 1, 2)).mean(dim=(2, 3))
        np.testing.assert_allclose(feats[:, 0].astype(np.float32), want.numpy(), rtol=1e-2, atol=2e-3)
        np.testing.assert_allclose(logits[:, 0], rgb.fc(want).numpy(), rtol=1e-3, atol=1e-3)


def test_a_resume_with_other_weights_under_the_same_path_is_refused(video_dir):
    """Settings name the checkpoint's path; the store also keeps its sha256, so a file
    replaced between shards (or runs) cannot mix two networks' rows."""
    ck = video_dir / "own.pth"
    save_mmaction2(trained_looking(3, 0).state_dict(), ck)
    (video_dir / "two.txt").write_text("left/v0.mp4 0\nright/v0.mp4 1\n")
    args = ["extract", str(video_dir / "two.txt"), "--root", str(video_dir / "videos"), "--out",
            str(video_dir / "s.zarr"), "--backbone", "resnet50", "--checkpoint", f"rgb={ck}", "--streams", "rgb",
            "--frames", "1", "--crops", "1", "--flow", "none", "--no-thumbnails", "--quiet", "--shard", "1/2"]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    save_mmaction2(trained_looking(3, 1).state_dict(), ck)
    r = CliRunner().invoke(main, args[:-1] + ["2/2"], catch_exceptions=False)
    assert r.exit_code != 0 and "came from other weights" in r.output and "own.pth sha256" in r.output
