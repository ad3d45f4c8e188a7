"""Image towers as RGB backbones: CLIP, SigLIP and DINOv2, through transformers' own classes.

=================  ===========================================  ==============================
``--backbone``     network (transformers class)                  feature D
=================  ===========================================  ==============================
``clip_vit_b16``   CLIP ViT-B/16 (``CLIPVisionModelWithProjection``)  projected image embedding
``clip_vit_b32``   CLIP ViT-B/32                                  (``image_embeds``, not
``clip_vit_l14``   CLIP ViT-L/14                                  normalised), 512 / 768
``siglip_b16``     SigLIP B/16 (``SiglipVisionModel``)            the attention-pooled image
                                                                  embedding (``pooler_output``)
``dinov2_s14``     DINOv2 S/14, B/14, L/14 (``Dinov2Model``)      the CLS token after the final
``dinov2_b14``                                                    layer norm (``pooler_output``)
``dinov2_l14``
=================  ===========================================  ==============================

None ships weights: ``--checkpoint rgb=PATH`` names a hub download (a ``model.safetensors``
or its folder, with ``config.json`` and ``preprocessor_config.json``), or for CLIP an
OpenCLIP file (tower_files.py). The name fixes the family and patch size; the width, depth
and input size come from the checkpoint's config (the name's standard ones when it has
none), so ``clip_vit_b16`` reads any CLIP of patch 16. The weights file's sha256 is the
identity. Preprocessing is the processor's: short side resized to its ``shortest_edge`` (PIL,
its filter), the store's crops of its ``crop_size`` cut from that (extract/resize.py), then
its mean/std; all recorded in the store. Patch tokens (``--feature-maps``, for glimpse) are
the last hidden state without the CLS token: (S/p, S/p, width). These towers have no
classifier: their stores carry features only and ``framesel head`` trains the classes' head.
They take RGB only; a flow stream beside one has its own backbone (``--backbone
flow=NAME``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from data.errors import InputError
from extract.backbones import tower_files
from extract.backbones.checkpoints import load_strict
from extract.backbones.presets import PRESETS, Preset
from extract.backbones.spec import Backbone, WeightSpec, backbone_names, register_backbone
from extract.resize import RESAMPLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """One tower family: its transformers classes, its configs' ``model_type``s (full model,
    vision tower), its processor's defaults and what its feature is."""

    name: str
    config_class: str
    model_class: str
    model_types: tuple[str, str]
    preset: str
    cls_token: bool
    feature: str
    crop: int | None               # default crop (None: the config's image_size)
    short_side: int | None         # default resize (None: the crop)
    hub: str                       # where users get weights


FAMILIES = {f.name: f for f in (
    Family("clip", "CLIPVisionConfig", "CLIPVisionModelWithProjection", ("clip", "clip_vision_model"), "clip",
           True, "CLIP's projected image embedding (image_embeds, not normalised)", None, None,
           "openai/clip-vit-base-patch16 (transformers) or an OpenCLIP file"),
    Family("siglip", "SiglipVisionConfig", "SiglipVisionModel", ("siglip", "siglip_vision_model"), "siglip",
           False, "SigLIP's attention-pooled image embedding (pooler_output)", None, None,
           "google/siglip-base-patch16-224"),
    Family("dinov2", "Dinov2Config", "Dinov2Model", ("dinov2", "dinov2"), "imagenet",
           True, "DINOv2's CLS token after the final layer norm (pooler_output)", 224, 256,
           "facebook/dinov2-base"),
)}

_BASE = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
_LARGE = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
# name -> (family, patch size, the standard config used when a checkpoint has none)
VARIANTS = {
    "clip_vit_b16": ("clip", 16, {**_BASE, "patch_size": 16, "image_size": 224, "projection_dim": 512,
                                  "hidden_act": "quick_gelu"}),
    "clip_vit_b32": ("clip", 32, {**_BASE, "patch_size": 32, "image_size": 224, "projection_dim": 512,
                                  "hidden_act": "quick_gelu"}),
    "clip_vit_l14": ("clip", 14, {**_LARGE, "patch_size": 14, "image_size": 224, "projection_dim": 768,
                                  "hidden_act": "quick_gelu"}),
    "siglip_b16": ("siglip", 16, {**_BASE, "patch_size": 16, "image_size": 224, "hidden_act": "gelu_pytorch_tanh",
                                  "layer_norm_eps": 1e-6}),
    "dinov2_s14": ("dinov2", 14, {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
                                  "patch_size": 14, "image_size": 518}),
    "dinov2_b14": ("dinov2", 14, {**_BASE, "patch_size": 14, "image_size": 518}),
    "dinov2_l14": ("dinov2", 14, {**_LARGE, "patch_size": 14, "image_size": 518}),
}


def transformers_class(name: str):
    """A class of transformers, imported on first use (importing this module costs nothing)."""
    try:
        import transformers
    except ImportError as err:
        others = [n for n in backbone_names() if n not in VARIANTS]
        raise InputError(f"the image towers need transformers ({err}); pip install 'transformers>=4.40'; "
                         f"backbones available without it: {', '.join(others)}") from None
    return getattr(transformers, name)


class TowerBackbone(Backbone):
    """A transformers vision model as a framesel backbone: features and patch-token maps from
    one forward pass; no head (C = 0)."""

    def __init__(self, model: torch.nn.Module, spec: WeightSpec, family: Family):
        cfg = model.config
        side = spec.input_size // cfg.patch_size
        dim = cfg.projection_dim if family.name == "clip" else cfg.hidden_size
        super().__init__(spec, 3, dim, 0, (side, side, cfg.hidden_size))
        self.model, self.family = model, family

    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, 3, S, S) float32 -> ((B, D) features, (B, 0) logits, (B, width, S/p, S/p) patch tokens)."""
        self.check_input(x)
        out = self.model(pixel_values=x)
        feats = out.image_embeds if self.family.name == "clip" else out.pooler_output
        tokens = out.last_hidden_state[:, 1:] if self.family.cls_token else out.last_hidden_state
        b, n, d = tokens.shape
        side = math.isqrt(n)
        maps = tokens.reshape(b, side, side, d).permute(0, 3, 1, 2)
        return feats, feats.new_zeros((b, 0)), maps

    def forward_feature_maps(self, x: Tensor) -> Tensor:
        return self.forward_all(x)[2]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_all(x)[0]

    def forward_head(self, feats: Tensor) -> Tensor:
        """No classifier: (B, D) -> (B, 0)."""
        return feats.new_zeros((feats.shape[0], 0))


def build_tower(variant: str, in_channels: int, checkpoint: str | None) -> Backbone:
    """The tower ``variant`` (VARIANTS) with the weights at ``checkpoint`` (tower_files.py)."""
    family_name, patch, _ = VARIANTS[variant]
    family = FAMILIES[family_name]
    # RGB only: registered with streams=("rgb",), so create_backbone refuses a flow stream.
    if checkpoint is None:
        raise InputError(f"{variant} ships no weights: pass --checkpoint rgb=PATH, a model.safetensors or its "
                         f"folder (e.g. a download of {family.hub})")
    files = tower_files.read_tower_files(checkpoint)
    config = _config(variant, family, files)
    if config.patch_size != patch:
        raise InputError(f"{checkpoint}: a {family.name} of patch {config.patch_size}, not {variant}'s {patch}; "
                         f"pass the --backbone of its patch size")
    model = transformers_class(family.model_class)(config).eval()
    state = files.state
    if files.layout == "open_clip":
        state = tower_files.open_clip_to_transformers(state)
    load_strict(model, tower_files.match_keys(model, state, checkpoint), checkpoint)
    spec = _spec(variant, family, files, config)
    log.info("%s: %s layout, %s (width %d, %d layers, patch %d), crop %d from short side %s", checkpoint,
             files.layout, family.model_class, config.hidden_size, config.num_hidden_layers, patch,
             spec.input_size, spec.resize)
    return TowerBackbone(model, spec, family)


def _config(variant: str, family: Family, files: tower_files.TowerFiles):
    """The transformers config of the checkpoint: its config.json (a full model's vision
    part), OpenCLIP's, or the name's standard one."""
    cls = transformers_class(family.config_class)
    if files.layout == "open_clip":
        return cls(**tower_files.open_clip_config(files.state, files.config, files.weights))
    raw = files.config
    if raw is None:
        log.info("%s: no config.json beside it: %s's standard architecture", files.weights, variant)
        return cls(**VARIANTS[variant][2])
    kind = raw.get("model_type")
    if kind not in family.model_types:
        raise InputError(f"{files.weights}: its config.json describes a {kind!r} model, not a {family.name} "
                         f"({' or '.join(family.model_types)})")
    if kind == family.model_types[0] and kind != family.model_types[1]:     # a full model: its vision half
        vision = dict(raw.get("vision_config") or {})
        if family.name == "clip" and "projection_dim" in raw:
            vision["projection_dim"] = raw["projection_dim"]
        raw = vision
    return cls.from_dict({k: v for k, v in raw.items() if k != "model_type"})


def _spec(variant: str, family: Family, files: tower_files.TowerFiles, config) -> WeightSpec:
    crop, short, resample, preset = _preprocessing(family, files, config)
    where = files.weights.name + ("" if files.layout == "open_clip" else
                                  " + config.json" if files.config is not None else " (standard config)")
    return WeightSpec(name=f"{variant}:{files.name}", file=str(files.weights.resolve()), sha256=files.sha256,
                      input_size=crop, num_classes=0,
                      source=f"{files.layout} {family.model_class} from {where}; width {config.hidden_size}, "
                             f"{config.num_hidden_layers} layers, patch {config.patch_size}",
                      preset=preset, layout=files.layout, resize=short, resample=resample, feature=family.feature)


def _preprocessing(family: Family, files: tower_files.TowerFiles, config) -> tuple[int, int | None, str, Preset]:
    """(crop S, short side R or None, PIL filter, preset) from the processor's JSON, else the
    family's defaults; InputError for what framesel cannot reproduce."""
    pre = files.preprocessor or {}
    native = int(config.image_size)
    crop = family.crop or native
    short = family.short_side or crop
    mean, std, resample = PRESETS[family.preset].mean, PRESETS[family.preset].std, "bicubic"
    if files.layout == "open_clip":
        mean, std = tuple(pre.get("mean", mean)), tuple(pre.get("std", std))
        resample = pre.get("interpolation", resample)
    elif pre:
        crop, short = _processor_sizes(pre, crop, short, files.weights)
        if pre.get("do_normalize", True):
            mean, std = tuple(pre.get("image_mean", mean)), tuple(pre.get("image_std", std))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        code = pre.get("resample", RESAMPLE[resample])
        resample = next((n for n, c in RESAMPLE.items() if c == code), str(code))
    if family.name != "dinov2" and crop != native:
        raise InputError(f"{files.weights}: crop {crop} differs from the model's input size {native} "
                         "(its position embeddings are for that size)")
    if crop % config.patch_size:
        raise InputError(f"{files.weights}: crop {crop} is not a multiple of the patch size {config.patch_size}")
    if resample not in RESAMPLE:
        raise InputError(f"{files.weights}: resample filter {resample!r} is not one PIL has ({', '.join(RESAMPLE)})")
    return crop, short, resample, _preset(family, mean, std)


def _processor_sizes(pre: dict, crop: int, short: int, where) -> tuple[int, int | None]:
    """(crop, short side) from a preprocessor_config.json: ``size`` {shortest_edge} or
    {height, width} (resized keeping the aspect: its short side), ``crop_size``."""
    if abs(float(pre.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9 or not pre.get("do_rescale", True):
        raise InputError(f"{where}: preprocessor_config.json scales pixels other than x / 255")
    size = pre.get("size") or {}
    size = {"shortest_edge": size} if isinstance(size, int) else size
    edge = size.get("shortest_edge") or (min(size["height"], size["width"]) if "height" in size else None)
    if pre.get("do_center_crop", "crop_size" in pre):
        c = pre.get("crop_size", crop)
        c = {"height": c, "width": c} if isinstance(c, int) else c
        if c["height"] != c["width"]:
            raise InputError(f"{where}: a non-square crop {c['width']}x{c['height']}; framesel crops squares")
        crop = int(c["height"])
    elif edge:
        crop = int(edge)
    if not pre.get("do_resize", True):
        return crop, None
    return crop, int(edge) if edge else short


def _preset(family: Family, mean, std) -> Preset:
    """The family's named preset when the processor's mean/std are its own, else one named
    after the family with the processor's numbers."""
    base = PRESETS[family.preset]
    if len(mean) != 3 or len(std) != 3:
        raise InputError(f"image mean/std must have 3 values, got {mean} / {std}")
    if all(abs(a - b) < 1e-6 for a, b in zip((*mean, *std), (*base.mean, *base.std))):
        return base
    return Preset(f"{family.name}:processor", tuple(map(float, mean)), tuple(map(float, std)), False,
                  base.flow_scale, base.flow_shift, base.flow_quantise)


def _register(variant: str) -> None:
    family, patch, std = VARIANTS[variant]

    def build(in_channels: int, checkpoint: str | None) -> Backbone:
        return build_tower(variant, in_channels, checkpoint)
    build.__doc__ = (f"{FAMILIES[family].model_class} (patch {patch}, standard width {std['hidden_size']}) from "
                     "the user's --checkpoint (transformers or OpenCLIP layout).")
    register_backbone(variant, streams=("rgb",))(build)


for _variant in VARIANTS:
    _register(_variant)
