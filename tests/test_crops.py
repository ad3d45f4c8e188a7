"""Crop boxes (centre, TSN three-crop, TSN ten-crop) and cropping of frames and flow."""

import numpy as np
import pytest

from data.errors import InputError
from extract.crops import crop_boxes, crop_flow, crop_frames


def test_centre_crop_of_tsn_frame():
    assert crop_boxes(340, 256, 224, 1) == [(58, 16, False)]


def test_three_crops_run_along_the_longer_side():
    assert crop_boxes(340, 256, 224, 3) == [(0, 16, False), (58, 16, False), (116, 16, False)]
    # Portrait: top / centre / bottom, centred horizontally.
    assert crop_boxes(256, 340, 224, 3) == [(16, 0, False), (16, 58, False), (16, 116, False)]


def test_ten_crops_are_corners_centre_then_flips():
    boxes = crop_boxes(340, 256, 224, 10)
    five = [(0, 0), (116, 0), (0, 32), (116, 32), (58, 16)]
    assert boxes == [(x, y, False) for x, y in five] + [(x, y, True) for x, y in five]


def test_crop_equal_to_frame_is_allowed():
    assert crop_boxes(224, 224, 224, 10)[4] == (0, 0, False)


@pytest.mark.parametrize("num_crops", [0, 2, 5, 11, "3"])
def test_bad_number_of_crops(num_crops):
    with pytest.raises(InputError, match="num_crops"):
        crop_boxes(340, 256, 224, num_crops)


def test_crop_larger_than_frame():
    with pytest.raises(InputError, match="larger than the frame"):
        crop_boxes(340, 200, 224, 1)
    with pytest.raises(InputError):
        crop_boxes(0, 256, 224, 1)


def _frames(p=2, h=256, w=340, c=3):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (p, h, w, c), dtype=np.uint8)


def test_crop_frames_positions_shapes_and_flips():
    frames = _frames()
    boxes = crop_boxes(340, 256, 224, 10)
    crops = crop_frames(frames, boxes, 224)
    assert crops.shape == (2, 10, 224, 224, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[:, 1], frames[:, 0:224, 116:340])
    np.testing.assert_array_equal(crops[:, 4], frames[:, 16:240, 58:282])
    # The flipped crop is the mirror image of its unflipped twin.
    np.testing.assert_array_equal(crops[:, 6], crops[:, 1, :, ::-1])
    np.testing.assert_array_equal(crops[:, 6, :, 0], frames[:, 0:224, 339])


def test_crop_frames_rejects_bad_input():
    with pytest.raises(InputError, match="leaves"):
        crop_frames(_frames(), [(200, 0, False)], 224)
    with pytest.raises(InputError, match=r"\(P, H, W, C\)"):
        crop_frames(np.zeros((256, 340, 3), np.uint8), [(0, 0, False)], 224)


def _flow(p=2, stack=3, h=256, w=340):
    rng = np.random.default_rng(1)
    return rng.normal(0, 5, (p, stack, h, w, 2)).astype(np.float32)


def test_crop_flow_shapes_and_unflipped_content():
    flow = _flow()
    crops = crop_flow(flow, crop_boxes(340, 256, 224, 3), 224)
    assert crops.shape == (2, 3, 3, 224, 224, 2) and crops.dtype == np.float32
    np.testing.assert_array_equal(crops[:, 2], flow[:, :, 16:240, 116:340])


def test_flipped_flow_crop_negates_x_and_keeps_y():
    flow = _flow()
    boxes = [(10, 20, False), (10, 20, True)]
    crops = crop_flow(flow, boxes, 200)
    mirrored = crops[:, 0, :, :, ::-1]
    np.testing.assert_array_equal(crops[:, 1, ..., 0], -mirrored[..., 0])
    np.testing.assert_array_equal(crops[:, 1, ..., 1], mirrored[..., 1])
    # Rightward motion at the crop's left edge becomes leftward motion at its right edge.
    assert crops[0, 1, 0, 5, -1, 0] == -flow[0, 0, 25, 10, 0]


def test_crop_flow_rejects_bad_input():
    with pytest.raises(InputError, match="signed or float"):
        crop_flow(np.zeros((1, 1, 256, 340, 2), np.uint8), [(0, 0, True)], 224)
    with pytest.raises(InputError, match=r"\(P, L, H, W, 2\)"):
        crop_flow(np.zeros((1, 256, 340, 2), np.float32), [(0, 0, False)], 224)
    with pytest.raises(InputError, match="no crop boxes"):
        crop_flow(_flow(), [], 224)
