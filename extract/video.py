"""What determines a video's rows (:class:`VideoSettings`), the frozen models that make them
(:class:`Models`), and one video start to finish in this process (:func:`extract_video`):
decode → sample (:mod:`extract.prepare`, the CPU's) → flow → crops → backbone
(:mod:`extract.device`, the device's) → a VideoResult.

Kept separate from the orchestration in :mod:`extract.run` so that a worker process needs
only this module and the models it was handed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from data.errors import InputError, VideoError
from data.identity import settings_identity
from data.store import VideoResult
from extract import backbones, flow
from extract.device import DeviceStage
from extract.prepare import prepare_video

EXTRACTED_STREAMS = ("rgb", "flow")   # what extract_video produces
# How a video is processed, not what comes out: batch size changes only how many crops the
# backbone sees at once (eval mode: rows differ by float rounding of the kernels chosen,
# measured at most one float16 step, 0.00098 for |f| < 5.4, batch 16 vs 5 vs 1 on CPU).
# Such execution settings (data.identity.EXECUTION_SETTINGS, and the flow algorithms'
# device/batch/compile parameters) are recorded in the store and left out of its identity,
# so a resume on a smaller GPU is not refused; a bit-identical resume needs the same ones.


@dataclass(frozen=True)
class VideoSettings:
    """Everything that determines a video's rows in the store (all recorded in its attrs)."""

    frames: int = 25                   # T positions (TSN test protocol)
    flow_stack: int = 5                # L pairs per flow stack (TSN: 5 pairs = 10 channels)
    crops: int = 10                    # 1, 3 or 10 (TSN test protocol: 10)
    size: tuple[int, int] = (340, 256)  # stored frame size (width, height)
    streams: tuple[str, ...] = ("rgb", "flow")
    backbone: str = "efficientnet_lite0"
    checkpoints: tuple[tuple[str, str], ...] = ()   # (stream, path) pairs
    preset: str | None = None          # input scaling (backbones/presets.py); None: the weights' layout's
    flow: flow.FlowConfig | None = field(default_factory=flow.FlowConfig)   # None: no flow at all
    feature_maps: bool = False         # store last conv maps (for the glimpse agent)
    thumbnail_size: tuple[int, int] | None = (48, 64)   # (h, w); None = no thumbnails
    batch_size: int = 16
    max_frames: int | None = None

    def record(self) -> dict:
        """JSON-ready dict of every setting (what the store records)."""
        d = asdict(self)
        d["flow"] = self.flow.as_dict() if self.flow else None
        if d["preset"] is None:    # the weights' own: the record (and sha256) of stores before presets
            del d["preset"]
        return json.loads(json.dumps(d))

    def sha256(self) -> str:
        """Identifies a compatible store: the hash of the record's identity (data/identity.py:
        without execution settings and checkpoint paths; weights are identified by sha256)."""
        return hashlib.sha256(json.dumps(settings_identity(self.record()), sort_keys=True).encode()).hexdigest()

    def check(self) -> None:
        """InputError for streams extraction does not produce (none, unknown, twice) and for
        a checkpoint of a stream that is not extracted (it would be ignored)."""
        if self.preset is not None:
            backbones.get_preset(self.preset)
        streams, given = self.streams, ",".join(self.streams)
        produced = " and ".join(EXTRACTED_STREAMS)
        if not streams:
            raise InputError(f"--streams is empty: name the streams to extract ({produced}), "
                             "e.g. --streams rgb,flow")
        for i, name in enumerate(streams):
            if name not in EXTRACTED_STREAMS:
                raise InputError(f"--streams {given}: unknown stream {name!r}; extraction produces {produced}")
            if name in streams[:i]:
                raise InputError(f"--streams {given}: stream {name!r} is named twice")
        seen = set()
        for stream, path in self.checkpoints:
            if stream not in streams:
                raise InputError(f"--checkpoint {stream}={path}: {stream!r} is not one of the extracted "
                                 f"streams (--streams {given}); write e.g. --checkpoint {streams[0]}={path}")
            if stream in seen:
                raise InputError(f"--checkpoint: two checkpoints for stream {stream!r}")
            seen.add(stream)


class Models:
    """The frozen backbone per stream, built once per process."""

    def __init__(self, settings: VideoSettings, device: str = "cpu", num_classes: int = 0):
        ck = dict(settings.checkpoints)
        self.settings, self._stage = settings, None
        self.runners, self.keep_logits = {}, {}
        for stream in settings.streams:
            bb = backbones.create_backbone(settings.backbone, stream=stream, flow_stack=settings.flow_stack,
                                           checkpoint=ck.get(stream), preset=settings.preset)
            self.runners[stream] = backbones.BackboneRunner(bb, settings.batch_size, device)
            # Logits are stored only when the head speaks the dataset's classes (a user's
            # fine-tuned checkpoint). The embedded ImageNet head does not: `framesel head`
            # trains one on the cached features instead of storing 1000 useless scores.
            self.keep_logits[stream] = bb.num_classes == num_classes
            if stream in ck and bb.num_classes != num_classes:
                raise InputError(f"checkpoint {ck[stream]} has a {bb.num_classes}-class head but the "
                                 f"list has {num_classes} classes")

    @property
    def stage(self) -> DeviceStage:
        """The device stage that runs these models (built on first use)."""
        if self._stage is None:
            self._stage = DeviceStage(self.settings, self)
        return self._stage

    def backbone(self, stream):
        return self.runners[stream].backbone

    def describe(self) -> dict:
        """Per-stream backbone record for the store: name, weights, preprocessing, cost."""
        out = {}
        for stream, runner in self.runners.items():
            bb = runner.backbone
            spec = bb.spec
            out[stream] = {"name": spec.name, "file": spec.file, "sha256": spec.sha256,
                           "source": spec.source, "input_size": spec.input_size,
                           "mean": list(spec.mean), "std": list(spec.std),
                           "layout": spec.layout, "preset": spec.preset.record(),
                           "in_channels": bb.in_channels, "feature_dim": bb.feature_dim,
                           "num_classes": bb.num_classes, "logits_stored": self.keep_logits[stream],
                           "feature_map_shape": list(bb.feature_map_shape),
                           "gflops_per_frame": backbones.gflops_per_frame(bb),
                           "flops_convention": "FLOPs (2 x multiply-accumulates), torch.utils.flop_counter"}
        return out


def extract_video(path: str, settings: VideoSettings, models: Models) -> tuple[VideoResult, list[str]]:
    """Process one video in this process: :func:`extract.prepare.prepare_video`, then the
    device stage; returns its rows and notes (decoder warnings, short-video handling).

    Raises VideoError(path, cause) for anything that makes the video unusable.
    """
    outcome = models.stage.run([prepare_video(path, settings)])[0]
    if isinstance(outcome, VideoError):
        raise outcome
    return outcome
