"""The resize rule for a backbone's frames (extract/resize.py)."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from data.errors import InputError
from extract.backbones import LITE0_IMAGENET
from extract.resize import plan_resize, resize_flow, resize_frames, resized_size

TORCH_THREADS = 1


def spec(**changes):
    return dataclasses.replace(LITE0_IMAGENET, **changes)


def test_the_short_side_fits_the_input_and_the_aspect_is_kept():
    assert plan_resize(spec(), (340, 256)) is None                       # 224 crops fit 340x256
    big = plan_resize(spec(input_size=260), (340, 256))
    assert big.size == (345, 260) and "260 px input exceeds the 340x256 frame" in big.reason
    assert plan_resize(spec(input_size=260), (256, 340)).size == (260, 345)   # portrait
    assert plan_resize(spec(resize=224), (340, 256)).size == (297, 224)      # a processor's shortest_edge
    assert plan_resize(spec(resize=256), (340, 256)) is None                 # already that size
    assert plan_resize(spec(input_size=260), (340, 256), "flow").resample == "bilinear-flow"
    assert resized_size((1920, 1080), 224) == (398, 224)


def test_what_cannot_be_done_is_refused_before_any_video():
    with pytest.raises(InputError, match="resizes the short side to 200 px, smaller than its 224 px crop"):
        plan_resize(spec(resize=200), (340, 256))
    with pytest.raises(InputError, match="unknown resample filter 'cubic'"):
        plan_resize(spec(resize=224, resample="cubic"), (340, 256))


def test_frames_are_pil_resized_and_flow_keeps_its_values():
    frames = np.random.default_rng(0).integers(0, 256, (2, 256, 340, 3), dtype=np.uint8)
    r = plan_resize(spec(resize=224), (340, 256))
    out = resize_frames(frames, r)
    want = np.asarray(Image.fromarray(frames[1]).resize((297, 224), resample=Image.Resampling.BICUBIC))
    assert out.shape == (2, 224, 297, 3) and np.array_equal(out[1], want)
    flow = torch.full((2, 3, 256, 340, 2), 4.5)
    flow[..., 1] = -2.0
    moved = resize_flow(flow, plan_resize(spec(input_size=260), (340, 256), "flow"))
    assert moved.shape == (2, 3, 260, 345, 2)
    assert torch.allclose(moved[..., 0], torch.tensor(4.5)) and torch.allclose(moved[..., 1], torch.tensor(-2.0))
