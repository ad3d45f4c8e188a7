"""Reading a user's weights: the file read as data, its key layout detected, keys renamed.

Researchers bring the files their peers' training code wrote (issue 12). Each is read by
:func:`read_state_dict`: a ``.safetensors`` file as it is (a JSON header and raw tensors,
nothing to unpickle); a torch file with torch's weights-only unpickler first, and for checkpoints that
carry a training loop's Python objects (mmengine's ``HistoryBuffer``, numpy scalars in the
metadata) the same data-only reader with inert placeholders for those objects
(data/torchfile.py): nothing in a file is imported or run. Then :func:`detect_layout` names
the layout from the keys and renames them to the family's own module names:

====================  ======================================  ===================================
layout                keys (after DataParallel's ``module.``)  renamed to
====================  ======================================  ===================================
``mmaction2``         ``backbone.conv1.conv``, ``.bn``,         torchvision's (``conv1``, ``bn1``,
                      ``layerX.Y.convN.{conv,bn}``,             ``layerX.Y.convN``/``bnN``,
                      ``downsample.{conv,bn}``,                 ``downsample.{0,1}``, ``fc``)
                      ``cls_head.fc_cls``
``tsn_pytorch``       ``base_model.<names>``, ``new_fc``       the family's names, ``fc``
``caffe_bninception``  ``conv1_7x7_s2``, ``inception_3a_1x1``…  unchanged; head ``fc``
                      head ``fc`` / ``last_linear`` / ``new_fc``
``torchvision``       ``conv1``, ``bn1``, ``layerX.Y.convN``    unchanged
``framesel``          EfficientNet-Lite's ``_conv_stem``, …     unchanged
====================  ======================================  ===================================

TSM checkpoints (a temporal shift wrapped around each block's first conv: ``.conv.net.``
in mmaction2, ``conv1.net.`` in TSM-pytorch) are refused: their features shift channels
between the frames of a clip, so a frame's feature depends on its neighbours, which
framesel's per-frame extraction cannot reproduce.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from data.errors import InputError
from data.torchfile import load_foreign_torch_data, load_safetensors
from extract.backbones.presets import get_preset
from extract.backbones.spec import WeightSpec

log = logging.getLogger(__name__)

# Containers a training script commonly wraps its state_dict in, and key prefixes added by
# DataParallel ("module."), torch.compile ("_orig_mod.") and our own wrapper ("net.").
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_KEY_PREFIXES = re.compile(r"^(?:(?:module|_orig_mod|net)\.)+")


@dataclass(frozen=True)
class Detected:
    """A checkpoint's layout: its name, the architecture family its keys belong to
    (``resnet``, ``bninception``, ``efficientnet_lite``), the preset that layout's training
    code fed the network (presets.py), and the state renamed to the family's module names."""

    layout: str
    family: str
    preset: str
    state: dict[str, Tensor]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file (a torch file, or ``*.safetensors`` read without
    unpickling anything), unwrapped from {"state_dict": ...}/{"model": ...} and stripped of
    DataParallel/compile prefixes.

    Raises:
        InputError: missing file, directory, empty file, not a torch file (e.g. a pickle
            reaching for os.system), or not a dict of tensors; one line naming the file.
    """
    path = Path(path)
    if path.suffix == ".safetensors":      # a JSON header and raw tensors: no pickle on this path
        obj, _ = load_safetensors(path, what="checkpoint")
    else:
        obj, inert = load_foreign_torch_data(path, what="checkpoint")
        if inert:
            log.info("%s: read its %s objects as inert placeholders (metadata, not weights)", path, ", ".join(inert))
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if isinstance(obj, dict):    # optimizer moments and counters next to the weights are not weights
        dropped = sorted(str(k) for k, v in obj.items() if not isinstance(v, Tensor))
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors and dropped:
            log.info("%s: kept its %d tensors, left out %d non-tensor entries (%s%s)", path, len(tensors),
                     len(dropped), ", ".join(dropped[:5]), ", …" if len(dropped) > 5 else "")
        obj = tensors or obj
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise InputError(f"{path}: expected a dict of tensors (optionally under 'state_dict' "
                         f"or 'model'), got {type(obj).__name__}")
    return {_KEY_PREFIXES.sub("", k): v for k, v in obj.items()}


def _mmaction2_resnet(key: str) -> str:
    """mmaction2's ConvModule names -> torchvision's (``layer1.0.conv2.bn.weight`` ->
    ``layer1.0.bn2.weight``; ``conv1.conv`` -> ``conv1``; ``downsample.bn`` -> ``downsample.1``)."""
    key = re.sub(r"^cls_head\.fc_cls\.", "fc.", key)
    key = re.sub(r"^backbone\.", "", key)
    key = re.sub(r"downsample\.conv\.", "downsample.0.", key)
    key = re.sub(r"downsample\.bn\.", "downsample.1.", key)
    key = re.sub(r"(^|\.)conv(\d)\.conv\.", r"\1conv\2.", key)
    return re.sub(r"(^|\.)conv(\d)\.bn\.", r"\1bn\2.", key)


_HEADS = re.compile(r"^(?:new_fc|last_linear|fc|cls_head\.fc_cls)\.")


def detect_layout(state: dict[str, Tensor], path: str | Path) -> Detected:
    """Name the layout of ``state`` (module docstring) and rename its keys; InputError
    naming the file and the first keys when no layout fits, or for TSM."""
    keys = list(state)
    if any(".conv.net." in k or re.search(r"conv1\.net\.", k) for k in keys):
        raise InputError(f"{path}: a TSM checkpoint (temporal shift around the block convs, e.g. "
                         f"{next(k for k in keys if '.net.' in k)}): its features mix the frames of a "
                         "clip, which per-frame extraction cannot reproduce; use its TSN counterpart")
    if any(k.startswith("backbone.") for k in keys):
        body = {_mmaction2_resnet(k): v for k, v in state.items()}
        family = "bninception" if any("inception_3a" in k for k in body) else "resnet"
        preset = "caffe_bgr" if family == "bninception" else "mmaction2"
        return Detected("mmaction2", family, preset, _rename_head(body))
    if any(k.startswith("base_model.") for k in keys):
        body = {re.sub(r"^base_model\.", "", k): v for k, v in state.items()}
        family = "bninception" if any("inception_3a" in k for k in body) else "resnet"
        # TSN-pytorch feeds its caffe-converted BN-Inception BGR 0..255 (Stack(roll=True))
        preset = "caffe_bgr" if family == "bninception" else "tsn_pytorch"
        return Detected("tsn_pytorch", family, preset, _rename_head(body))
    if any(k.startswith("conv1_7x7_s2") for k in keys):
        return Detected("caffe_bninception", "bninception", "caffe_bgr", _rename_head(state))
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in keys):
        return Detected("torchvision", "resnet", "imagenet", _rename_head(state))
    if "_conv_stem.weight" in state:
        return Detected("framesel", "efficientnet_lite", "framesel", dict(state))
    raise InputError(f"{path}: no known checkpoint layout fits its keys (first: {', '.join(keys[:4])}); "
                     "framesel reads mmaction2, TSN/TSM-pytorch, caffe-converted BN-Inception, "
                     "torchvision and its own")


def _rename_head(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The classifier under ``fc`` whatever the layout called it (``new_fc``, ``last_linear``,
    mmaction2's ``cls_head.fc_cls``)."""
    return {_HEADS.sub("fc.", k): v for k, v in state.items()}


def check_family(found: Detected, family: str, arch: str, path: str | Path) -> None:
    """InputError unless the checkpoint's keys belong to ``arch``'s family."""
    if found.family != family:
        raise InputError(f"{path}: a {found.family} checkpoint ({found.layout} layout), not {arch}'s "
                         f"{family}; pass --backbone with a {found.family} architecture")


def load_strict(module: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """load_state_dict(strict=True), but mismatches raise InputError naming the first keys.

    Missing BatchNorm ``num_batches_tracked`` counters are tolerated (unused in eval).
    """
    expected = module.state_dict()
    state = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **state}
    problems = {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "wrong shape": [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
                        for k, v in expected.items() if k in state and state[k].shape != v.shape],
    }
    parts = [f"{what} ({len(keys)}): {', '.join(keys[:5])}" for what, keys in problems.items()
             if keys]
    if parts:
        raise InputError(f"{path}: checkpoint does not fit the architecture; " + "; ".join(parts))
    check_finite(state, path)
    module.load_state_dict(state, strict=True)


def check_finite(state: dict[str, Tensor], path: str | Path) -> None:
    """InputError naming the tensors that hold NaN or inf (a diverged training run saved
    them): every feature would be NaN, and extraction would fail every video."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(f"{path}: checkpoint holds NaN or inf in {len(bad)} tensor(s) ({', '.join(bad[:3])}"
                         f"{', …' if len(bad) > 3 else ''}): its weights are broken (a diverged training run?); "
                         "use another checkpoint")


def cross_modality(weight: Tensor, in_channels: int) -> Tensor:
    """TSN's cross-modality init: (O, 3, k, k) RGB filters averaged over their input
    channels and replicated to (O, in_channels, k, k) (no rescaling)."""
    return weight.mean(dim=1, keepdim=True).expand(-1, in_channels, -1, -1).contiguous()


def fit_stem(state: dict[str, Tensor], key: str, in_channels: int, path: str | Path) -> tuple[dict, str]:
    """The state with its first conv ``key`` fitting ``in_channels``: unchanged when it does;
    an RGB stem used for flow gets the cross-modality init (logged); anything else is an
    InputError naming the mismatch. Returns (state, a note for the weights' source)."""
    stem = state.get(key)
    if stem is None or stem.ndim != 4 or stem.shape[1] == in_channels:
        return state, ""
    if stem.shape[1] != 3:
        raise InputError(f"{path}: first conv {key} has {stem.shape[1]} input channels, the stream needs "
                         f"{in_channels} (flow: 2 x --flow-stack)")
    log.warning("%s: RGB stem used for %d-channel input; applying cross-modality init", path, in_channels)
    return {**state, key: cross_modality(stem, in_channels)}, f"; stem: TSN cross-modality init over {in_channels} ch"


def head_classes(state: dict[str, Tensor], key: str, in_features: int, path: str | Path) -> int:
    """C of the checkpoint's classifier ``key`` (0 when it has none); InputError when its
    input size is not the architecture's."""
    weight = state.get(f"{key}.weight")
    if weight is None:
        if f"{key}.bias" in state:
            raise InputError(f"{path}: has {key}.bias but no {key}.weight")
        log.info("%s has no classifier head; the backbone gives features only", path)
        return 0
    if weight.ndim != 2 or weight.shape[1] != in_features:
        raise InputError(f"{path}: {key}.weight has shape {tuple(weight.shape)}, expected (C, {in_features})")
    return int(weight.shape[0])


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err}") from err
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _sha256_memo(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def cached_sha256(path: Path) -> str:
    """sha256_file memoised on (path, size, mtime): building a backbone twice hashes once."""
    stat = path.stat()
    return _sha256_memo(str(path), stat.st_size, stat.st_mtime_ns)


def check_embedded(path: Path, expected: str, package: str) -> None:
    """InputError unless the embedded weights at ``path`` have the sha256 ``expected``."""
    digest = cached_sha256(path)
    if digest != expected:
        raise InputError(f"{path}: sha256 {digest} differs from the expected {expected}; reinstall {package}")


def user_weights(path: str | Path, *, family: str, arch: str, in_channels: int, stem_key: str,
                 head_key: str, feature_dim: int, input_size: int):
    """Read a user's checkpoint for ``arch`` (of ``family``): -> (state in the family's
    names with its stem fitting ``in_channels``, WeightSpec). The spec records the layout
    found, the preset it implies, the file's sha256 and the head's class count (0: none)."""
    path = Path(path)
    found = detect_layout(read_state_dict(path), path)
    check_family(found, family, arch, path)
    state, note = fit_stem(found.state, stem_key, in_channels, path)
    classes = head_classes(state, head_key, feature_dim, path)
    log.info("%s: %s layout (%s), preset %s, %d-class head", path, found.layout, found.family, found.preset, classes)
    spec = WeightSpec(name=f"{arch}:{path.stem}", file=str(path.resolve()), sha256=sha256_file(path),
                      input_size=input_size, num_classes=classes,
                      source=f"user checkpoint {path.name} ({found.layout} layout){note}",
                      preset=get_preset(found.preset), layout=found.layout)
    return state, spec
