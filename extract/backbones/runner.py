"""Running a backbone: batched inference on CPU or CUDA, and its FLOPs per frame."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from data.errors import InputError
from extract.backbones.presets import preprocess_rgb
from extract.backbones.spec import Backbone


def gflops_per_frame(backbone: Backbone, include_head: bool = True) -> float:
    """GFLOPs of one forward pass on one (1, in_channels, S, S) input, S the spec's size.

    Counted with ``torch.utils.flop_counter.FlopCounterMode``, which counts FLOPs = 2 x MACs of
    convolutions and matrix products (EfficientNet-Lite0 at 224: ~0.8 GFLOPs = ~0.4 GMACs; ResNet-50: ~8.2);
    element-wise ops (BatchNorm, ReLU6, residual adds, pooling) are not counted. The head
    (D x C) is included unless ``include_head`` is False.
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
            return backbone.forward_all(x)
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
        n, bb = len(x), self.backbone
        # Outputs gather on the device and come back in one copy: a copy per batch would
        # make a GPU wait for the host after every batch.
        feats = torch.empty((n, bb.feature_dim), dtype=torch.float32, device=self.device)
        logits = torch.empty((n, bb.num_classes), dtype=torch.float32, device=self.device)
        maps = torch.empty((n, *bb.feature_map_shape), dtype=torch.float32, device=self.device) if return_maps else None
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                stop = min(start + self.batch_size, n)
                out = self._step(self._batch(x, start, stop))
                feats[start:stop] = out[0][: stop - start]
                logits[start:stop] = out[1][: stop - start]
                if maps is not None:
                    maps[start:stop] = out[2][: stop - start].permute(0, 2, 3, 1)
        return (feats.cpu().numpy(), logits.cpu().numpy(),
                maps.cpu().numpy() if maps is not None else None)

    def _batch(self, x: np.ndarray | Tensor, start: int, stop: int) -> Tensor:
        """Rows start:stop as a (B, C_in, S, S) float32 channels_last tensor on the device."""
        chunk = x[start:stop]
        if chunk.dtype in (np.uint8, torch.uint8):          # numpy or a tensor on any device
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
