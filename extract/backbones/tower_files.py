"""Reading an image tower's files as the model hubs publish them.

Two layouts, told apart by the keys:

- ``transformers``: a ``model.safetensors`` (or the folder holding it, its shards listed in
  ``model.safetensors.index.json``, or a ``pytorch_model.bin`` read as data), with
  ``config.json`` and ``preprocessor_config.json`` beside it, as ``save_pretrained`` writes
  them (openai/clip-vit-base-patch16, google/siglip-base-patch16-224, facebook/dinov2-base).
  A full CLIP or SigLIP file keeps its vision half (``vision_model.*``, CLIP's
  ``visual_projection``); the text tower, ``logit_scale``/``logit_bias`` and DINOv2's ImageNet
  ``classifier`` are left out (logged). Keys are matched on a canonical name, so the
  ``vision_model.``/``dinov2.`` prefixes and DINOv2's attention names before and after
  transformers 5 (``attention.attention.query`` / ``attention.q_proj``) both load, strictly.
- ``open_clip``: OpenCLIP's ``visual.*`` keys (``visual.conv1``, ``visual.transformer.
  resblocks.N.attn.in_proj_weight``, ``visual.proj``), renamed to transformers' CLIP names by
  :func:`open_clip_to_transformers` (the fused q/k/v projection split in three, ``proj``
  transposed). The architecture comes from ``open_clip_config.json`` beside the file, else
  from the tensors' shapes (heads = width / 64, open_clip's default); the activation is
  QuickGELU (OpenAI's CLIP) unless that config says ``"quick_gelu": false``.

Everything read here is data: safetensors (a JSON header and raw tensors), JSON configs, and
torch files through the weights-only reader.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from data.errors import InputError
from extract.backbones.checkpoints import read_state_dict, sha256_file

log = logging.getLogger(__name__)

# A folder's weights, first found wins.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "open_clip_model.safetensors",
                "open_clip_pytorch_model.bin", "pytorch_model.bin")
# Keys of a published file that are not the vision tower (text tower, contrastive scale,
# DINOv2's linear ImageNet classifier, position-id buffers of older versions).
_IGNORED = re.compile(r"^(?:text_model\.|text_projection\.|logit_scale$|logit_bias$|classifier\.)|position_ids$")
_PREFIX = re.compile(r"^(?:vision_model|dinov2)\.")
_RENAMES = ((re.compile(r"\.attention\.attention\.query\."), ".attention.q_proj."),
            (re.compile(r"\.attention\.attention\.key\."), ".attention.k_proj."),
            (re.compile(r"\.attention\.attention\.value\."), ".attention.v_proj."),
            (re.compile(r"\.attention\.output\.dense\."), ".attention.o_proj."))


@dataclass(frozen=True)
class TowerFiles:
    """What a ``--checkpoint`` path holds: the tensors, the layout they are in, the JSON files
    found beside them (None when absent), the identity (sha256) and a name."""

    weights: Path
    state: dict[str, Tensor]
    layout: str                        # transformers | open_clip
    config: dict | None                # config.json, or open_clip_config.json's model_cfg
    preprocessor: dict | None          # preprocessor_config.json, or open_clip's preprocess_cfg
    sha256: str
    name: str


def read_tower_files(path: str | Path) -> TowerFiles:
    """Read a tower checkpoint: a weights file or the folder holding one (module docstring).

    Raises InputError naming the path for a missing path, a folder without weights, a file
    that does not read, or malformed JSON beside it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist")
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise InputError(f"checkpoint folder {path} holds none of {', '.join(WEIGHT_FILES)}")
    if weights.name.endswith(".index.json"):
        state, sha = _sharded(weights)
    else:
        state, sha = read_state_dict(weights), sha256_file(weights)
    open_clip = any(k.startswith("visual.") for k in state)
    if open_clip:
        cfg = _json(folder / "open_clip_config.json")
        config, pre = (cfg or {}).get("model_cfg"), (cfg or {}).get("preprocess_cfg")
    else:
        config, pre = _json(folder / "config.json"), _json(folder / "preprocessor_config.json")
    name = folder.name if path.is_dir() else weights.stem
    return TowerFiles(weights, state, "open_clip" if open_clip else "transformers", config, pre, sha, name)


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _sharded(index: Path) -> tuple[dict[str, Tensor], str]:
    """The tensors of every shard an index lists, and one identity: the sha256 of the shards'
    sha256s in file-name order."""
    weight_map = (_json(index) or {}).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{index}: no weight_map")
    state, digest = {}, hashlib.sha256()
    for name in sorted(set(weight_map.values())):
        shard = index.parent / name
        state.update(read_state_dict(shard))
        digest.update(sha256_file(shard).encode())
    return state, digest.hexdigest()


def canonical(key: str) -> str:
    """A key without the ``vision_model.``/``dinov2.`` prefix and with DINOv2's attention in
    transformers 5's names: the same for a file and a module of either version."""
    key = _PREFIX.sub("", key)
    for pattern, new in _RENAMES:
        key = pattern.sub(new, key)
    return key


def match_keys(module: torch.nn.Module, state: dict[str, Tensor], path) -> dict[str, Tensor]:
    """``state`` renamed to ``module``'s keys through :func:`canonical`; the parts of a
    published file that are not the vision tower (``_IGNORED``) are left out and logged; any
    other key is kept as it is, for the strict load to name."""
    by_canonical = {canonical(k): k for k in module.state_dict()}
    out, dropped = {}, []
    for key, value in state.items():
        target = by_canonical.get(canonical(key))
        if target is not None:
            out[target] = value
        elif _IGNORED.search(key):
            dropped.append(key)
        else:
            out[key] = value
    if dropped:
        log.info("%s: left out %d tensors that are not the vision tower (%s%s)", path, len(dropped),
                 ", ".join(dropped[:3]), ", …" if len(dropped) > 3 else "")
    return out


_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_NAMES = {"attn.out_proj.": "self_attn.out_proj.", "ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.",
                "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
_TOP_NAMES = {"class_embedding": "embeddings.class_embedding",
              "positional_embedding": "embeddings.position_embedding.weight",
              "conv1.weight": "embeddings.patch_embedding.weight"}


def open_clip_to_transformers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """OpenCLIP's ``visual.*`` tensors in transformers' CLIP names (canonical, without the
    ``vision_model.`` prefix); the text tower is dropped; a key with no counterpart stays
    under its own name (``visual.…``) for the strict load to name."""
    out = {}
    for key, value in state.items():
        if not key.startswith("visual."):
            continue
        key = key[len("visual."):]
        block = _BLOCK.match(key)
        if block:
            out.update(_block(int(block.group(1)), block.group(2), value))
        elif key in _TOP_NAMES:
            out[_TOP_NAMES[key]] = value
        elif key.startswith(("ln_pre.", "ln_post.")):
            head, rest = key.split(".", 1)
            out[("pre_layrnorm." if head == "ln_pre" else "post_layernorm.") + rest] = value
        elif key == "proj":                              # x @ proj (W, E) == Linear(W, E) with weight proj.T
            out["visual_projection.weight"] = value.t().contiguous()
        else:
            out[f"visual.{key}"] = value
    return out


def _block(i: int, rest: str, value: Tensor) -> dict[str, Tensor]:
    pre = f"encoder.layers.{i}."
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):   # nn.MultiheadAttention packs q, k, v
        kind = rest.rsplit("_", 1)[-1]
        q, k, v = value.chunk(3, dim=0)
        return {f"{pre}self_attn.{n}_proj.{kind}": t.contiguous() for n, t in (("q", q), ("k", k), ("v", v))}
    for old, new in _BLOCK_NAMES.items():
        if rest.startswith(old):
            return {pre + new + rest[len(old):]: value}
    return {f"visual.transformer.resblocks.{i}.{rest}": value}


def open_clip_config(state: dict[str, Tensor], model_cfg: dict | None, path) -> dict:
    """transformers ``CLIPVisionConfig`` fields of an OpenCLIP ViT: from its model_cfg when
    present, else from the tensors' shapes (heads = width / 64)."""
    try:
        conv, pos = state["visual.conv1.weight"], state["visual.positional_embedding"]
        proj, fc = state["visual.proj"], state["visual.transformer.resblocks.0.mlp.c_fc.weight"]
    except KeyError as err:
        raise InputError(f"{path}: an OpenCLIP file without {err.args[0]}: only ViT image towers are read "
                         "(not the ResNet CLIPs)") from None
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"visual\.transformer\.resblocks\.(\d+)\.", k)))
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = int(round((pos.shape[0] - 1) ** 0.5))
    vision = (model_cfg or {}).get("vision_cfg") or {}
    head_width = int(vision.get("head_width", 64))
    quick = bool((model_cfg or {}).get("quick_gelu", model_cfg is None))
    return {"hidden_size": width, "intermediate_size": int(fc.shape[0]), "num_hidden_layers": layers,
            "num_attention_heads": max(1, width // head_width), "image_size": grid * patch, "patch_size": patch,
            "projection_dim": int(proj.shape[1]), "hidden_act": "quick_gelu" if quick else "gelu",
            "layer_norm_eps": 1e-5}
