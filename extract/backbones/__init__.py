"""Per-frame backbones: the front door of extraction's frozen networks.

Read in this order:

1. ``spec.py`` — what a backbone is (:class:`Backbone`, :class:`WeightSpec`) and the name
   registry (:func:`create_backbone`).
2. ``checkpoints.py`` — a user's weights: read as data (never run), key layout detected
   (mmaction2, TSN/TSM-pytorch, caffe-converted BN-Inception, torchvision, framesel),
   renamed to the family's module names.
3. ``presets.py`` — each family's input scaling, RGB and flow (:func:`preprocess_rgb`,
   :func:`preprocess_flow`).
4. ``runner.py`` — batched inference (:class:`BackboneRunner`) and FLOPs per frame.
5. One file per family: ``efficientnet_lite.py`` (the embedded ImageNet default, lite0/1/2),
   ``resnet.py`` (18–152, torchvision names), ``bninception.py`` (TSN's BN-Inception),
   ``towers.py`` (CLIP, SigLIP, DINOv2 image towers through transformers; their files as
   the hubs publish them are read by ``tower_files.py``); ``tiny.py`` (``tiny_random``, a
   seeded random network for plumbing tests and smoke runs: its features mean nothing).

Adding a backbone is one ``@register_backbone`` builder in a family module imported below
(GUIDE §6.1).
"""
from extract.backbones import bninception, efficientnet_lite, resnet, tiny, towers  # noqa: F401  (they register)
from extract.backbones.checkpoints import detect_layout, load_strict, read_state_dict, sha256_file
from extract.backbones.efficientnet_lite import LITE0_IMAGENET
from extract.backbones.presets import PRESETS, Preset, get_preset, preprocess_flow, preprocess_rgb
from extract.backbones.runner import BackboneRunner, gflops_per_frame, run_batches
from extract.backbones.spec import STREAMS, Backbone, WeightSpec, backbone_names, create_backbone, register_backbone

__all__ = ["BackboneRunner", "Backbone", "LITE0_IMAGENET", "PRESETS", "Preset", "STREAMS", "WeightSpec",
           "backbone_names", "create_backbone", "detect_layout", "gflops_per_frame", "get_preset", "load_strict",
           "preprocess_flow", "preprocess_rgb", "read_state_dict", "register_backbone", "run_batches",
           "sha256_file"]
