"""Checkpoint files written the way the peers' training code writes them (issue 12).

No video weights can be downloaded here, so tests build randomly initialised models and save
them in each family's key layout and container: mmaction2's (mmengine's ``runner``:
``{meta, state_dict, message_hub, optimizer}``, with ``HistoryBuffer`` objects in the message
hub and numpy scalars in the metadata), TSN/TSM-pytorch's (DataParallel ``module.base_model.``
keys, ``new_fc``, ``{epoch, arch, state_dict, best_prec1}``) and torchvision's (a bare
state_dict). The mmengine class is defined under its real module name only while saving, as
mmengine would have it; loading must then read it without mmengine.
"""
from __future__ import annotations

import re
import sys
import types
from collections import OrderedDict

import numpy as np
import torch


def mmaction2_names(state: dict) -> OrderedDict:
    """torchvision ResNet names -> mmaction2's (``backbone.`` + ConvModule ``.conv``/``.bn``,
    ``downsample.conv``/``.bn``, ``cls_head.fc_cls``)."""
    out = OrderedDict()
    for key, value in state.items():
        if key.startswith("fc."):
            out["cls_head.fc_cls." + key[3:]] = value
            continue
        k = re.sub(r"^conv1\.", "conv1.conv.", key)
        k = re.sub(r"^bn1\.", "conv1.bn.", k)
        k = re.sub(r"\.conv(\d)\.", r".conv\1.conv.", k)
        k = re.sub(r"\.bn(\d)\.", r".conv\1.bn.", k)
        k = k.replace("downsample.0.", "downsample.conv.").replace("downsample.1.", "downsample.bn.")
        out["backbone." + k] = value
    return out


def _history_buffer_class():
    """mmengine.logging.history_buffer.HistoryBuffer as mmengine defines it (its state only)."""
    names = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
    mods = [sys.modules.setdefault(n, types.ModuleType(n)) for n in names]

    class HistoryBuffer:
        def __init__(self, values=(), max_length=1000000):
            self.max_length = max_length
            self._log_history = np.array(values, dtype=np.float64)
            self._count_history = np.ones(len(values), dtype=np.float64)

    HistoryBuffer.__module__ = names[-1]
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    mods[-1].HistoryBuffer = HistoryBuffer
    return HistoryBuffer, names


def save_mmaction2(state: dict, path) -> None:
    """What mmengine's Runner.save_checkpoint writes for an mmaction2 TSN recognizer."""
    buffer, names = _history_buffer_class()
    try:
        torch.save({
            "meta": {"epoch": np.int64(100), "iter": np.int64(9500), "mmengine_version": "0.10.4",
                     "seed": np.int64(0), "dataset_meta": None, "experiment_name": "tsn_r50"},
            "state_dict": mmaction2_names(state),
            "message_hub": {"log_scalars": {"train/loss": buffer([1.2, 0.9]), "train/lr": buffer([0.01])},
                            "runtime_info": {"epoch": 100, "iter": 9500}, "resumed_keys": {"epoch": True}},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]},
        }, path)
    finally:
        for n in names:
            sys.modules.pop(n, None)


def save_tsn_pytorch(state: dict, path, arch: str = "resnet50", legacy: bool = True) -> None:
    """What TSN-pytorch's main.py writes: DataParallel keys, the classifier as ``new_fc``,
    in torch's legacy (pre-1.6, non-zip) format when ``legacy``."""
    sd = OrderedDict((("module.new_fc." + k[3:]) if k.startswith("fc.") else "module.base_model." + k, v)
                     for k, v in state.items())
    torch.save({"epoch": 80, "arch": arch, "state_dict": sd, "best_prec1": np.float64(84.5)}, path,
               _use_new_zipfile_serialization=not legacy)


def save_torchvision(state: dict, path) -> None:
    """torchvision's model zoo files: the bare state_dict."""
    torch.save(OrderedDict(state), path)


def touching_pickle(path, victim) -> None:
    """A 'checkpoint' whose unpickling would create the file ``victim`` (os.system)."""
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {victim}",))

    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "meta": Evil()}, path)


def random_checkpoint(name: str, path, num_classes: int = 7, tiny: bool = False):
    """A bare state_dict of a randomly initialised registered backbone that ships no weights
    (torchvision's layout for ResNets, the caffe-converted one for BN-Inception; an image
    tower's save_pretrained folder, its standard size or with ``tiny`` a 2-layer one of
    width 64); None for backbones with embedded weights or none (tiny_random)."""
    if name.startswith("resnet"):
        from extract.backbones.resnet import ResNet
        net = ResNet(int(name[len("resnet"):]), 3, num_classes)
    elif name == "bninception":
        from extract.backbones.bninception import BNInception
        net = BNInception(3, num_classes)
    elif name in tower_variants():
        return save_tower(name, path, tiny_config(name) if tiny else None)
    else:
        return None
    save_torchvision(net.state_dict(), path)
    return str(path)


# ----------------------------------------------------------------------- image towers

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}


def tiny_config(name: str) -> dict:
    """A 2-layer, width-64 config of tower ``name`` (its patch size; CLIP projects to 32)."""
    family, patch, _ = tower_variants()[name]
    return {**TINY, "patch_size": patch, **({"projection_dim": 32} if family == "clip" else {})}


def tower_variants() -> dict:
    from extract.backbones.towers import VARIANTS
    return VARIANTS


def tower_model(name: str, config: dict | None = None, seed: int = 0):
    """A randomly initialised transformers model of tower ``name`` (its standard config, or
    ``config``), in eval mode."""
    import transformers

    from extract.backbones.towers import FAMILIES
    family, _, standard = tower_variants()[name]
    fam = FAMILIES[family]
    torch.manual_seed(seed)
    cfg = getattr(transformers, fam.config_class)(**(config or standard))
    return getattr(transformers, fam.model_class)(cfg).eval()


def save_tower(name: str, folder, config: dict | None = None, seed: int = 0) -> str:
    """``save_pretrained`` of a random tower: config.json + model.safetensors, as the hubs hold them."""
    tower_model(name, config, seed).save_pretrained(str(folder))
    return str(folder)


def open_clip_names(state: dict) -> dict:
    """transformers' CLIPVisionModelWithProjection state -> OpenCLIP's ``visual.*`` keys (q, k,
    v packed into ``in_proj``, the projection transposed), written independently of framesel's
    reader (which maps the other way)."""
    top = {"embeddings.class_embedding": "class_embedding", "embeddings.patch_embedding.weight": "conv1.weight",
           "embeddings.position_embedding.weight": "positional_embedding"}
    block = {"self_attn.out_proj.": "attn.out_proj.", "layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.",
             "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj."}
    out, qkv = {}, {}
    for key, value in state.items():
        k = key.removeprefix("vision_model.")
        m = re.match(r"encoder\.layers\.(\d+)\.(.+)$", k)
        packed = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", m.group(2)) if m else None
        if k in top:
            out["visual." + top[k]] = value
        elif k == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
        elif k.startswith(("pre_layrnorm.", "post_layernorm.")):
            out["visual." + ("ln_pre." if k.startswith("pre") else "ln_post.") + k.split(".", 1)[1]] = value
        elif packed:
            qkv.setdefault((m.group(1), packed.group(2)), {})[packed.group(1)] = value
        elif m:
            old = next(o for o in block if m.group(2).startswith(o))
            out[f"visual.transformer.resblocks.{m.group(1)}.{block[old]}{m.group(2)[len(old):]}"] = value
    for (i, kind), parts in qkv.items():
        out[f"visual.transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([parts[c] for c in "qkv"])
    # a text tower beside it, as OpenCLIP files have one
    out.update({"token_embedding.weight": torch.randn(10, 8), "positional_embedding": torch.randn(4, 8),
                "text_projection": torch.randn(8, 8), "logit_scale": torch.tensor(4.6),
                "transformer.resblocks.0.attn.in_proj_weight": torch.randn(24, 8)})
    return out
