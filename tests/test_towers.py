"""Image towers (issue 29): CLIP, SigLIP and DINOv2 built with transformers' own classes and
random weights (no weights can be downloaded here), saved as safetensors the way the hubs
publish them, read back by framesel; framesel's features of a decoded frame equal the
library's own path on that frame (its PIL image processor set to the same resize and crop,
then its model) within 1e-4. An OpenCLIP-layout file gives the same features."""
import json

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner
from safetensors.torch import save_file

from data.errors import InputError
from data.store import open_store
from extract import crops, decode
from extract.backbones import create_backbone, gflops_per_frame, run_batches
from extract.resize import plan_resize, resize_frames
from pipeline.cli import main
from tests.conftest import moving_texture, write_video
from tests.peer_checkpoints import TINY, open_clip_names, save_tower, tower_model

TORCH_THREADS = 2
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# tower -> (its PIL image processor, as the hub's preprocessor_config.json sets it)
PROCESSORS = {
    "clip_vit_b16": lambda: transformers.CLIPImageProcessorPil(),
    "siglip_b16": lambda: transformers.SiglipImageProcessorPil(size={"shortest_edge": 224}, do_center_crop=True,
                                                               crop_size={"height": 224, "width": 224}),
    "dinov2_b14": lambda: transformers.BitImageProcessorPil(size={"shortest_edge": 256}, image_mean=IMAGENET[0],
                                                            image_std=IMAGENET[1]),
}
TINY_CONFIG = {"clip_vit_b16": {**TINY, "patch_size": 16, "projection_dim": 32},
               "siglip_b16": {**TINY, "patch_size": 16}, "dinov2_b14": {**TINY, "patch_size": 14}}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """(3, 256, 340, 3) uint8 frames decoded from a real lossless video."""
    path = write_video(tmp_path_factory.mktemp("v") / "v.mp4", moving_texture(3, seed=5))
    return decode.decode(str(path), (340, 256)).frames


def framesel_features(bb, frames, K=1):
    """framesel's path: the resize its weights ask for, the store's crops, its preprocessing
    and forward pass -> ((N*K, D), (N*K, h, w, d)) float32."""
    resize = plan_resize(bb.spec, (340, 256))
    x = resize_frames(frames, resize) if resize else frames
    S = bb.spec.input_size
    cut = crops.crop_frames(x, crops.crop_boxes(x.shape[2], x.shape[1], S, K), S).reshape(-1, S, S, 3)
    feats, _, maps = run_batches(bb, cut, return_maps=True)
    return feats, maps


def library_features(name, model, processor, frames):
    """transformers' own path: its image processor, then its model -> (features, patch tokens)."""
    px = processor(images=list(frames), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values=px)
    feats = out.image_embeds if name.startswith("clip") else out.pooler_output
    tokens = out.last_hidden_state if name.startswith("siglip") else out.last_hidden_state[:, 1:]
    return feats.numpy(), tokens.numpy()


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_features_equal_the_library_path_on_a_decoded_frame(name, frames, tmp_path):
    model = tower_model(name, TINY_CONFIG[name])
    model.save_pretrained(str(tmp_path / name))
    processor = PROCESSORS[name]()
    processor.save_pretrained(str(tmp_path / name))
    bb = create_backbone(name, checkpoint=str(tmp_path / name))
    assert bb.num_classes == 0 and bb.spec.layout == "transformers" and len(bb.spec.sha256) == 64
    ours, maps = framesel_features(bb, frames)
    want, tokens = library_features(name, model, processor, frames)
    np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(maps.reshape(len(frames), -1, maps.shape[-1]), tokens, atol=1e-4, rtol=0)
    assert gflops_per_frame(bb) > 0


def test_the_processors_resize_is_recorded_and_the_frames_keep_their_aspect(tmp_path):
    clip = create_backbone("clip_vit_b16", checkpoint=save_tower("clip_vit_b16", tmp_path / "c",
                                                                 TINY_CONFIG["clip_vit_b16"]))
    assert plan_resize(clip.spec, (340, 256)).size == (297, 224)
    dino = create_backbone("dinov2_b14", checkpoint=save_tower("dinov2_b14", tmp_path / "d", TINY_CONFIG["dinov2_b14"]))
    assert (dino.spec.resize, dino.spec.input_size, dino.spec.preset.name) == (256, 224, "imagenet")
    assert plan_resize(dino.spec, (340, 256)) is None          # 256 is the frame's short side already


@pytest.mark.parametrize("config", [None, {"quick_gelu": False}])
def test_an_open_clip_file_gives_the_same_features(config, frames, tmp_path):
    cfg = {**TINY, "hidden_size": 128, "intermediate_size": 256, "patch_size": 16, "projection_dim": 32,
           "hidden_act": "gelu" if config else "quick_gelu"}
    model = tower_model("clip_vit_b16", cfg, seed=3)
    save_file(open_clip_names(model.state_dict()), str(tmp_path / "open_clip_model.safetensors"))
    if config is not None:
        (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    bb = create_backbone("clip_vit_b16", checkpoint=str(tmp_path / "open_clip_model.safetensors"))
    assert bb.spec.layout == "open_clip" and bb.feature_dim == 32
    want, _ = library_features("clip_vit_b16", model, transformers.CLIPImageProcessorPil(), frames)
    np.testing.assert_allclose(framesel_features(bb, frames)[0], want, atol=1e-4, rtol=0)


def test_published_variants_load_full_models_sharded_files_and_both_dinov2_namings(frames, tmp_path):
    """A full CLIPModel (text tower beside it: left out), a sharded save, and DINOv2 keys in
    transformers 5's names (save_pretrained writes the older ones) all load strictly."""
    torch.manual_seed(1)
    full = transformers.CLIPModel(transformers.CLIPConfig(
        vision_config={**TINY, "patch_size": 16}, text_config={**TINY, "vocab_size": 99}, projection_dim=16))
    full.save_pretrained(str(tmp_path / "full"), max_shard_size="100KB")
    assert (tmp_path / "full" / "model.safetensors.index.json").exists()
    bb = create_backbone("clip_vit_b16", checkpoint=str(tmp_path / "full"))
    px = torch.from_numpy(np.random.default_rng(0).random((2, 3, 224, 224), np.float32))
    with torch.no_grad():
        want = full.visual_projection(full.vision_model(pixel_values=px).pooler_output)
        np.testing.assert_allclose(bb.forward_features(px).numpy(), want.numpy(), atol=1e-5)
    dino = tower_model("dinov2_b14", TINY_CONFIG["dinov2_b14"], seed=2)
    save_file(dino.state_dict(), str(tmp_path / "dino.safetensors"))      # no config.json: standard one refused
    with pytest.raises(InputError, match="does not fit"):
        create_backbone("dinov2_b14", checkpoint=str(tmp_path / "dino.safetensors"))
    (tmp_path / "config.json").write_text(dino.config.to_json_string())
    bb = create_backbone("dinov2_b14", checkpoint=str(tmp_path / "dino.safetensors"))
    with torch.no_grad():
        np.testing.assert_allclose(bb.forward_features(px).numpy(), dino(pixel_values=px).pooler_output.numpy(),
                                   atol=1e-5)


def test_what_a_tower_refuses_is_said_before_any_video(tmp_path):
    ck = save_tower("clip_vit_b16", tmp_path / "c", {**TINY_CONFIG["clip_vit_b16"], "patch_size": 32})
    with pytest.raises(InputError, match="patch 32, not clip_vit_b16's 16"):
        create_backbone("clip_vit_b16", checkpoint=ck)
    with pytest.raises(InputError, match="RGB only"):
        create_backbone("clip_vit_b32", stream="flow", checkpoint=ck)
    with pytest.raises(InputError, match="ships no weights.*openai/clip-vit-base-patch16"):
        create_backbone("clip_vit_b16")
    with pytest.raises(InputError, match="describes a 'clip_vision_model' model, not a dinov2"):
        create_backbone("dinov2_b14", checkpoint=ck)
    with pytest.raises(InputError, match="holds none of model.safetensors"):
        create_backbone("siglip_b16", checkpoint=str(tmp_path))


def test_extract_a_clip_store_rgb_only_and_a_flow_stream_beside_a_tower(video_dir):
    """The CLI on real videos: a CLIP store records its preprocessing, has no logits and no
    motion; its float16 features are framesel's float32 ones rounded. A tower cannot take
    the flow stream, but another backbone can beside it."""
    ck = save_tower("clip_vit_b16", video_dir / "clip", TINY_CONFIG["clip_vit_b16"])
    (video_dir / "two.txt").write_text("left/v0.mp4 0\nright/v0.mp4 1\n")
    common = ["extract", str(video_dir / "two.txt"), "--root", str(video_dir / "videos"), "--frames", "2",
              "--no-thumbnails", "--quiet", "--checkpoint", f"rgb={ck}"]
    r = CliRunner().invoke(main, [*common, "--out", str(video_dir / "clip.zarr"), "--backbone", "clip_vit_b16",
                                  "--streams", "rgb", "--flow", "none", "--crops", "10"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "resized to 297x224" in r.output and "it has no classifier head" in r.output
    store = open_store(video_dir / "clip.zarr")
    d = store.attrs["backbone"]["rgb"]
    assert d["resize"]["to"] == [297, 224] and d["preset"]["name"] == "clip" and d["layout"] == "transformers"
    assert "projected image embedding" in d["feature"] and not store.has("rgb/logits") and not store.has("motion")
    info = CliRunner().invoke(main, ["info", str(video_dir / "clip.zarr")])
    assert "frames resized 340x256 -> 297x224 (bicubic" in info.output and "crops of 224 px" in info.output
    video = decode.decode(str(video_dir / "videos/left/v0.mp4"), (340, 256)).frames
    bb = create_backbone("clip_vit_b16", checkpoint=ck)
    want = framesel_features(bb, video[store.read("frame_index", 0)], K=10)[0]
    np.testing.assert_allclose(store.read("rgb/features", 0).reshape(20, -1), want, atol=2e-3, rtol=2e-3)
    refused = CliRunner().invoke(main, [*common, "--out", str(video_dir / "x.zarr"), "--backbone", "clip_vit_b16",
                                        "--flow", "farneback"])
    assert refused.exit_code == 1 and "RGB only" in refused.output and not (video_dir / "x.zarr").exists()
    both = CliRunner().invoke(main, [*common, "--out", str(video_dir / "two.zarr"), "--backbone", "rgb=clip_vit_b16",
                                     "--backbone", "flow=efficientnet_lite0", "--flow", "farneback", "--flow-stack",
                                     "1", "--crops", "1"], catch_exceptions=False)
    assert both.exit_code == 0, both.output
    with open_store(video_dir / "two.zarr") as s:
        assert s.attrs["backbone"]["flow"]["backbone"] == "efficientnet_lite0" and s.has("motion")
        assert s.read("flow/features", 1).shape == (2, 1, 1280)


def test_every_weight_loader_takes_safetensors(tmp_path):
    """A classic backbone's file as safetensors (no pickle) gives the .pth file's network."""
    from extract.backbones.resnet import ResNet
    from tests.peer_checkpoints import mmaction2_names, save_mmaction2

    torch.manual_seed(0)
    net = ResNet(18, 3, 5).eval()
    save_mmaction2(net.state_dict(), tmp_path / "r.pth")
    save_file(dict(mmaction2_names(net.state_dict())), str(tmp_path / "r.safetensors"))
    a = create_backbone("resnet18", checkpoint=str(tmp_path / "r.pth"))
    b = create_backbone("resnet18", checkpoint=str(tmp_path / "r.safetensors"))
    assert (b.spec.layout, b.num_classes) == ("mmaction2", 5)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(a(x)[0], b(x)[0]) and torch.equal(a(x)[1], b(x)[1])
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(InputError, match="bad.safetensors: not a readable safetensors file"):
        create_backbone("resnet18", checkpoint=str(tmp_path / "bad.safetensors"))
