"""BN-Inception: the caffe-named architecture, and the peers' checkpoint files loading into it.

No BN-Inception video weights can be downloaded here, so each test builds a seeded random
network (BN statistics randomised too, so a BN that failed to load would show), saves it the
way a peer's code writes ``bn_inception_*.pth`` files, loads it through create_backbone and
compares features and logits with the network it came from on the same input.
"""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

from data.errors import InputError
from extract.backbones import create_backbone, detect_layout, read_state_dict
from extract.backbones.bninception import BNInception

# Each test runs a few batch-1 forwards (~4 GFLOPs each); one thread keeps them ~1 s apiece.
TORCH_THREADS = 1
SIZE = 224
# Cadene's pretrainedmodels/models/bninception.py (and TSN-pytorch's bn_inception.yaml) hold
# 69 convs with biases (10,240,192 weights + 10,016 biases), 69 BNs (20,032 gamma/beta) and
# last_linear 1024 -> 1000 (1,025,000): 11,295,240 parameters, 485 state_dict entries.
REFERENCE_PARAMS = 11_295_240
# A few shapes from the reference, at the places the blocks differ most.
REFERENCE_SHAPES = {
    "conv1_7x7_s2.weight": (64, 3, 7, 7),
    "conv2_3x3.weight": (192, 64, 3, 3),
    "inception_3a_pool_proj.weight": (32, 192, 1, 1),
    "inception_3c_3x3.weight": (160, 128, 3, 3),
    "inception_4a_1x1.weight": (224, 576, 1, 1),
    "inception_4d_double_3x3_reduce.weight": (160, 608, 1, 1),
    "inception_4e_double_3x3_2.weight": (256, 256, 3, 3),
    "inception_5a_1x1.weight": (352, 1056, 1, 1),
    "inception_5b_double_3x3_reduce.weight": (192, 1024, 1, 1),
    "inception_5b_pool_proj_bn.running_var": (128,),
    "fc.weight": (1000, 1024),
}


def random_net(in_channels: int, num_classes: int, seed: int) -> BNInception:
    """A seeded BNInception in eval mode with non-trivial BN statistics and affine terms."""
    torch.manual_seed(seed)
    net = BNInception(in_channels, num_classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval().requires_grad_(False)


def formula_state(net: BNInception, seed: int) -> dict:
    """Weights drawn from torch.rand with a seeded generator (stable across torch versions,
    unlike the layers' init), He-uniform for convs and fc, BN terms and statistics non-trivial."""
    gen, out = torch.Generator().manual_seed(seed), {}
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = value
            continue
        u = torch.rand(value.shape, generator=gen, dtype=torch.float64).float()
        if key.endswith("weight") and value.ndim >= 2:
            out[key] = (u * 2 - 1) * math.sqrt(6 / value[0].numel())
        elif key.endswith("_bn.weight"):
            out[key] = 0.5 + u
        elif key.endswith("_bn.bias"):
            out[key] = (u - 0.5) * 0.4
        elif key.endswith("running_mean"):
            out[key] = u - 0.5
        elif key.endswith("running_var"):
            out[key] = 0.5 + 1.5 * u
        else:    # conv and fc biases
            out[key] = (u - 0.5) * 0.2
    return out


def caffe_input(channels: int, seed: int) -> torch.Tensor:
    """(1, channels, 224, 224) in the caffe_bgr range: levels 0..255 minus ~128."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, SIZE, SIZE, generator=gen) * 255 - 120


def run_reference(net: BNInception, x: torch.Tensor):
    with torch.inference_mode():
        feats = net.feature_maps(x).mean(dim=(2, 3))
        return feats, (net.fc(feats) if net.fc is not None else feats[:, :0])


def old_torch(net: BNInception) -> OrderedDict:
    """The state as the 2017 conversions saved it: no BN ``num_batches_tracked`` counters."""
    return OrderedDict((k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked"))


def save_caffe_converted(net: BNInception, path) -> None:
    """Cadene's bn_inception-52deb4733.pth: the bare state_dict, head ``last_linear``."""
    torch.save(OrderedDict((("last_linear." + k[3:]) if k.startswith("fc.") else k, v)
                           for k, v in old_torch(net).items()), path)


def save_tsn_pytorch(net: BNInception, path) -> None:
    """TSN-pytorch main.py's checkpoint: DataParallel + TSN wrapper keys, dropout head ``new_fc``."""
    sd = OrderedDict((("module.new_fc." + k[3:]) if k.startswith("fc.") else "module.base_model." + k, v)
                     for k, v in old_torch(net).items())
    torch.save({"epoch": 80, "arch": "BNInception", "state_dict": sd, "best_prec1": np.float64(85.1)}, path)


def assert_same_outputs(model, net: BNInception, x: torch.Tensor) -> None:
    feats, logits = run_reference(net, x)
    with torch.inference_mode():
        got_feats, got_logits = model(x)
    assert got_feats.shape == (1, 1024) and got_logits.shape == logits.shape
    torch.testing.assert_close(got_feats, feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_logits, logits, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def rgb_net():
    return random_net(3, 1000, seed=0)


@pytest.fixture(scope="module")
def caffe_file(rgb_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("bn") / "bn_inception-52deb4733.pth"
    save_caffe_converted(rgb_net, path)
    return path


def test_architecture_matches_the_reference(rgb_net):
    assert sum(p.numel() for p in rgb_net.parameters()) == REFERENCE_PARAMS
    state = rgb_net.state_dict()
    assert len(state) == 485
    for key, shape in REFERENCE_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert all(m.bias is not None for m in rgb_net.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.inference_mode():
        assert rgb_net.feature_maps(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 1024, 7, 7)
    assert BNInception(num_classes=0).fc is None


def test_outputs_are_the_reference_implementations():
    """Features and logits of formula_state(seed 0) on a fixed input, as Cadene's
    pretrainedmodels BNInception (features, then logits) computed them; TSN-pytorch's
    yaml-built BNInception gave the same numbers (checked once, when this was written)."""
    net = BNInception(3, 1000).eval()
    net.load_state_dict(formula_state(net, seed=0))
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    feats, logits = run_reference(net, x)
    expected_feats = [0.2586916983127594, 0.13831457495689392, 0.6733096241950989, 0.03206253796815872,
                      0.44087693095207214, 0.0]
    torch.testing.assert_close(feats[0, [0, 3, 4, 5, 511, 1023]], torch.tensor(expected_feats), rtol=1e-4, atol=1e-5)
    assert feats.sum().item() == pytest.approx(956.049072265625, rel=1e-5)
    expected_logits = [-3.835292339324951, -0.2534535825252533, -1.434867262840271, 0.8140264749526978]
    torch.testing.assert_close(logits[0, [0, 1, 2, 999]], torch.tensor(expected_logits), rtol=1e-4, atol=1e-5)
    assert logits.sum().item() == pytest.approx(-31.374483108520508, rel=1e-4)


def test_caffe_converted_layout(rgb_net, caffe_file):
    found = detect_layout(read_state_dict(caffe_file), caffe_file)
    assert (found.layout, found.family, found.preset) == ("caffe_bninception", "bninception", "caffe_bgr")
    model = create_backbone("bninception", stream="rgb", checkpoint=str(caffe_file))
    assert (model.in_channels, model.feature_dim, model.num_classes) == (3, 1024, 1000)
    assert model.feature_map_shape == (7, 7, 1024)
    assert model.spec.layout == "caffe_bninception" and model.spec.preset.name == "caffe_bgr"
    x = caffe_input(3, seed=1)
    assert_same_outputs(model, rgb_net, x)
    with torch.inference_mode():
        assert model.forward_feature_maps(x).shape == (1, 1024, 7, 7)
    with pytest.raises(InputError, match="224"):
        model.forward_feature_maps(torch.zeros(1, 3, 112, 112))


def test_tsn_pytorch_container(tmp_path):
    net = random_net(3, 101, seed=2)
    path = tmp_path / "ucf101_bninception__rgb_checkpoint.pth.tar"
    save_tsn_pytorch(net, path)
    found = detect_layout(read_state_dict(path), path)
    assert (found.layout, found.family, found.preset) == ("tsn_pytorch", "bninception", "caffe_bgr")
    model = create_backbone("bninception", checkpoint=str(path))
    assert model.num_classes == 101 and model.spec.layout == "tsn_pytorch"
    assert_same_outputs(model, net, caffe_input(3, seed=3))


def test_flow_checkpoint_loads_its_ten_channel_stem(tmp_path):
    net = random_net(10, 101, seed=4)
    path = tmp_path / "ucf101_bninception__flow_checkpoint.pth.tar"
    save_tsn_pytorch(net, path)
    model = create_backbone("bninception", stream="flow", flow_stack=5, checkpoint=str(path))
    assert model.in_channels == 10 and model.spec.preset.name == "caffe_bgr"
    assert torch.equal(model.net.conv1_7x7_s2.weight, net.conv1_7x7_s2.weight)
    assert_same_outputs(model, net, caffe_input(10, seed=5))
    with pytest.raises(InputError, match="10 input channels"):
        create_backbone("bninception", checkpoint=str(path))


def test_rgb_checkpoint_for_flow_gets_cross_modality_init(rgb_net, caffe_file):
    model = create_backbone("bninception", stream="flow", flow_stack=5, checkpoint=str(caffe_file))
    assert model.in_channels == 10 and "cross-modality" in model.spec.source
    stem = rgb_net.conv1_7x7_s2.weight
    assert torch.equal(model.net.conv1_7x7_s2.weight, stem.mean(dim=1, keepdim=True).expand(-1, 10, -1, -1))
    assert torch.equal(model.net.conv1_7x7_s2.bias, rgb_net.conv1_7x7_s2.bias)
    # the rest is the RGB network's: the same outputs as it with that stem put in
    flow_net = BNInception(10, 1000).eval()
    flow_net.load_state_dict({**rgb_net.state_dict(), "conv1_7x7_s2.weight": model.net.conv1_7x7_s2.weight})
    assert_same_outputs(model, flow_net, caffe_input(10, seed=6))


def test_headless_checkpoint_gives_features_only(rgb_net, tmp_path):
    path = tmp_path / "features_only.pth"
    torch.save({k: v for k, v in old_torch(rgb_net).items() if not k.startswith("fc.")}, path)
    model = create_backbone("bninception", checkpoint=str(path))
    assert model.num_classes == 0 and model.net.fc is None
    x = caffe_input(3, seed=7)
    with torch.inference_mode():
        feats, logits = model(x)
    assert logits.shape == (1, 0)
    torch.testing.assert_close(feats, run_reference(rgb_net, x)[0], rtol=1e-5, atol=1e-5)


def test_without_checkpoint_is_an_input_error():
    with pytest.raises(InputError, match="--checkpoint"):
        create_backbone("bninception")


def test_resnet_checkpoint_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}, path)
    with pytest.raises(InputError, match="resnet"):
        create_backbone("bninception", checkpoint=str(path))
