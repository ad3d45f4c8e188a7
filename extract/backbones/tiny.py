"""``tiny_random``: a small randomly initialised network, for plumbing, not for features.

Two strided convolutions (64 px crops -> 4x4 maps of D = 32) and a 10-class head, their
weights drawn from a fixed seed, so every build is the same network and its sha256 is the
same on every machine. It exists so that what does not depend on the features (stores,
shards, resume, reports, the CLI; ``framesel extract --backbone tiny_random`` as a smoke run
of a cluster setup) runs in milliseconds a frame; its features mean nothing, and no result
computed on them says anything about video. The embedded EfficientNet-Lite0 stays the
default and the one the faithfulness tests and the benchmarks run.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from data.errors import InputError
from data.torchfile import state_sha256
from extract.backbones.presets import PRESETS
from extract.backbones.spec import Backbone, WeightSpec, register_backbone

SEED = 0
INPUT_SIZE = 64          # crop side in px
FEATURE_DIM = 32
NUM_CLASSES = 10
STRIDE = 4               # per convolution: 64 -> 16 -> 4


class TinyRandom(Backbone):
    """conv 4x4/4 (in -> 16) - ReLU - conv 4x4/4 (16 -> 32) - ReLU; head: linear 32 -> 10."""

    def __init__(self, in_channels: int):
        with torch.random.fork_rng(devices=[]):      # the caller's RNG is left as it was
            torch.manual_seed(SEED + in_channels)
            body = nn.Sequential(nn.Conv2d(in_channels, 16, STRIDE, STRIDE), nn.ReLU(),
                                 nn.Conv2d(16, FEATURE_DIM, STRIDE, STRIDE), nn.ReLU())
            head = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        side, weights = INPUT_SIZE // STRIDE ** 2, nn.ModuleDict({"body": body, "head": head}).state_dict()
        spec = WeightSpec(name="tiny_random", file="(none: drawn from a seed)", sha256=state_sha256(weights),
                          input_size=INPUT_SIZE, num_classes=NUM_CLASSES, preset=PRESETS["framesel"],
                          source=f"random initialisation, torch seed {SEED} + in_channels (plumbing only)",
                          feature="spatial mean of random convolutional maps (meaningless)")
        super().__init__(spec, in_channels, FEATURE_DIM, NUM_CLASSES, (side, side, FEATURE_DIM))
        self.body, self.head = body, head

    def forward_feature_maps(self, x: Tensor) -> Tensor:
        """(B, in_channels, 64, 64) float32 -> (B, 32, 4, 4) float32."""
        self.check_input(x)
        return self.body(x)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, 32) float32 -> (B, 10) float32 logits."""
        return self.head(feats)


@register_backbone("tiny_random", weights="seeded")
def tiny_random(in_channels: int, checkpoint: str | None) -> Backbone:
    """A seeded random network of 64 px crops and D = 32 (plumbing and smoke runs only)."""
    if checkpoint is not None:
        raise InputError(f"tiny_random is drawn from a seed and reads no weights, not {checkpoint}")
    return TinyRandom(in_channels)
