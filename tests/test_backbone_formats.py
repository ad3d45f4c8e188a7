"""Bring your own backbone (issue 12): each peer's checkpoint file loads through
``create_backbone(..., checkpoint=)`` with the layout and preset it implies, and gives
exactly the reference model's features and logits; a malicious pickle never runs."""
import logging

import numpy as np
import pytest
import torch

from data.errors import InputError
from extract.backbones import create_backbone, detect_layout, gflops_per_frame, preprocess_flow, read_state_dict
from extract.backbones.presets import PRESETS
from extract.backbones.resnet import ResNet
from tests.peer_checkpoints import save_mmaction2, save_torchvision, save_tsn_pytorch, touching_pickle

TORCH_THREADS = 2


def reference(depth=18, in_channels=3, num_classes=7, seed=0):
    torch.manual_seed(seed)
    net = ResNet(depth, in_channels, num_classes).eval()
    with torch.no_grad():     # BatchNorm statistics away from (0, 1), so a dropped key shows
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def same_outputs(backbone, net, channels=3):
    x = torch.randn(2, channels, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        feats, logits = backbone(x)
        maps = net.feature_maps(x)
        want = maps.mean(dim=(2, 3))
        return torch.allclose(feats, want, atol=1e-5) and torch.allclose(logits, net.fc(want), atol=1e-5)


SAVERS = {"mmaction2": (save_mmaction2, "mmaction2"), "tsn_pytorch": (save_tsn_pytorch, "tsn_pytorch"),
          "torchvision": (save_torchvision, "imagenet")}


@pytest.mark.parametrize("layout", sorted(SAVERS))
def test_each_resnet_layout_round_trips_with_its_preset(layout, tmp_path):
    save, preset = SAVERS[layout]
    net = reference()
    path = tmp_path / f"{layout}.pth"
    save(net.state_dict(), path)
    assert detect_layout(read_state_dict(path), path).layout == layout
    bb = create_backbone("resnet18", checkpoint=str(path))
    assert (bb.spec.layout, bb.spec.preset.name, bb.num_classes) == (layout, preset, 7)
    assert bb.spec.sha256 and layout in bb.spec.source
    assert same_outputs(bb, net)


def test_a_flow_checkpoint_keeps_its_2l_channel_stem_and_an_rgb_one_gets_cross_modality(tmp_path):
    flow_net = reference(in_channels=10, seed=3)
    save_mmaction2(flow_net.state_dict(), tmp_path / "flow.pth")
    bb = create_backbone("resnet18", stream="flow", flow_stack=5, checkpoint=str(tmp_path / "flow.pth"))
    assert bb.in_channels == 10 and same_outputs(bb, flow_net, channels=10)
    rgb_net = reference()
    save_torchvision(rgb_net.state_dict(), tmp_path / "rgb.pth")
    bb = create_backbone("resnet18", stream="flow", flow_stack=5, checkpoint=str(tmp_path / "rgb.pth"))
    want = rgb_net.conv1.weight.mean(dim=1, keepdim=True).expand(-1, 10, -1, -1)
    assert torch.equal(bb.net.conv1.weight, want) and "cross-modality" in bb.spec.source
    with pytest.raises(InputError, match="10 input channels.*needs 6"):
        create_backbone("resnet18", stream="flow", flow_stack=3, checkpoint=str(tmp_path / "flow.pth"))


def test_resnet50_is_torchvisions_resnet50():
    """25,557,032 parameters and ~4.1 GMACs (8.2 GFLOPs) at 224, torchvision's published numbers."""
    net = ResNet(50, 3, 1000)
    assert sum(p.numel() for p in net.parameters()) == 25_557_032
    assert sum(p.numel() for p in ResNet(18, 3, 1000).parameters()) == 11_689_512


def test_resnet50_gflops_and_maps(tmp_path):
    save_torchvision(ResNet(50, 3, 1000).state_dict(), tmp_path / "r50.pth")
    bb = create_backbone("resnet50", checkpoint=str(tmp_path / "r50.pth"))
    assert bb.feature_map_shape == (7, 7, 2048) and bb.feature_dim == 2048
    assert 8.1 < gflops_per_frame(bb) < 8.3


def test_mismatches_name_the_file_and_the_first_keys(tmp_path):
    state = reference().state_dict()
    del state["layer2.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    save_torchvision(state, tmp_path / "bad.pth")
    with pytest.raises(InputError, match=r"bad.pth.*missing \(1\): layer2.0.conv1.weight.*unexpected \(1\): extra"):
        create_backbone("resnet18", checkpoint=str(tmp_path / "bad.pth"))
    save_torchvision(reference(depth=34).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(InputError, match="unexpected"):
        create_backbone("resnet18", checkpoint=str(tmp_path / "r34.pth"))
    save_torchvision({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "lite.pth")
    with pytest.raises(InputError, match="efficientnet_lite checkpoint .*not resnet18"):
        create_backbone("resnet18", checkpoint=str(tmp_path / "lite.pth"))
    save_torchvision({"foo.weight": torch.zeros(1)}, tmp_path / "odd.pth")
    with pytest.raises(InputError, match="no known checkpoint layout.*foo.weight"):
        create_backbone("resnet18", checkpoint=str(tmp_path / "odd.pth"))
    with pytest.raises(InputError, match="ships no weights.*--checkpoint"):
        create_backbone("resnet50")


def test_tsm_checkpoints_are_refused_with_the_reason(tmp_path):
    state = {k.replace("layer1.0.conv1.", "layer1.0.conv1.net."): v for k, v in reference().state_dict().items()}
    save_tsn_pytorch(state, tmp_path / "tsm.pth", legacy=False)
    with pytest.raises(InputError, match="TSM checkpoint.*mix the frames"):
        create_backbone("resnet18", checkpoint=str(tmp_path / "tsm.pth"))


def test_a_pickle_that_would_touch_a_file_never_runs(tmp_path):
    victim = tmp_path / "touched"
    touching_pickle(tmp_path / "evil.pth", victim)
    with pytest.raises(InputError, match="evil.pth.*(system|run code)"):
        create_backbone("resnet18", checkpoint=str(tmp_path / "evil.pth"))
    assert not victim.exists()


def test_mmengine_bookkeeping_loads_as_inert_placeholders(tmp_path):
    """torch.load(weights_only=True) alone refuses the file (numpy scalars, HistoryBuffer)."""
    from data.torchfile import load_foreign_torch_data, load_torch_data

    save_mmaction2(reference().state_dict(), tmp_path / "mm.pth")
    with pytest.raises(InputError, match="holds a Python object"):
        load_torch_data(tmp_path / "mm.pth")
    obj, inert = load_foreign_torch_data(tmp_path / "mm.pth")
    assert "mmengine.logging.history_buffer.HistoryBuffer" in inert
    assert repr(obj["message_hub"]["log_scalars"]["train/lr"]) == "<inert mmengine.logging.history_buffer.HistoryBuffer>"


def test_non_tensor_entries_beside_the_weights_are_logged_not_silently_dropped(tmp_path, caplog):
    weights = reference().state_dict()
    torch.save({**weights, "epoch": 7, "arch": "resnet50"}, tmp_path / "flat.pth")
    with caplog.at_level(logging.INFO, logger="extract.backbones.checkpoints"):
        state = read_state_dict(tmp_path / "flat.pth")
    assert set(state) == set(weights)
    assert f"kept its {len(weights)} tensors, left out 2 non-tensor entries (arch, epoch)" in caplog.text


FLOW = np.array([-25.0, -20.0, -7.3, 0.0, 0.05, 7.3, 20.0, 31.0], np.float32)


@pytest.mark.parametrize("preset, want", [
    ("framesel", FLOW.clip(-20, 20) / 20),
    ("mmaction2", (np.round((FLOW.clip(-20, 20) + 20) * 255 / 40) - 128) / 128),
    ("tsn_pytorch", (np.round((FLOW.clip(-20, 20) + 20) * 255 / 40) / 255 - 0.5) / 0.226),
    ("caffe_bgr", np.round((FLOW.clip(-20, 20) + 20) * 255 / 40) - 128),
])
def test_flow_presets_scale_as_each_family_trained(preset, want):
    x = np.zeros((1, 1, 1, len(FLOW), 2), np.float32)
    x[0, 0, 0, :, 0] = FLOW
    out = preprocess_flow(x, 20.0, PRESETS[preset])
    assert out.shape == (1, 2, 1, len(FLOW))
    np.testing.assert_allclose(out[0, 0, 0].numpy(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("preset, want", [
    ("caffe_bgr", [30 - 104, 20 - 117, 10 - 128]),                  # BGR 0..255 minus the caffe means
    ("mmaction2", [(10 - 123.675) / 58.395, (20 - 116.28) / 57.12, (30 - 103.53) / 57.375]),
    ("tsn_pytorch", [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225]),
    ("framesel", [10 / 127.5 - 1, 20 / 127.5 - 1, 30 / 127.5 - 1]),
])
def test_rgb_presets_scale_and_order_channels_as_each_family_trained(preset, want):
    from types import SimpleNamespace

    from extract.backbones import preprocess_rgb

    crop = np.zeros((1, 4, 4, 3), np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 10, 20, 30            # R, G, B
    out = preprocess_rgb(crop, SimpleNamespace(input_size=4, preset=PRESETS[preset]))
    np.testing.assert_allclose(out[0, :, 2, 2].numpy(), want, rtol=1e-5, atol=1e-4)


def test_a_preset_override_is_recorded_in_the_spec(tmp_path):
    save_mmaction2(reference().state_dict(), tmp_path / "mm.pth")
    bb = create_backbone("resnet18", checkpoint=str(tmp_path / "mm.pth"), preset="tsn_pytorch")
    assert (bb.spec.layout, bb.spec.preset.name) == ("mmaction2", "tsn_pytorch")
    with pytest.raises(InputError, match="unknown preprocessing preset 'bgr'.*caffe_bgr"):
        create_backbone("resnet18", checkpoint=str(tmp_path / "mm.pth"), preset="bgr")
