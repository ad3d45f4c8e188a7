"""extract/partial.py's pure parts: the restricted record, the assembled rows, the settings
round trip and the centre crop (tests/test_predict.py runs the passes on real clips)."""
import numpy as np
import pytest

from data.layout import CENTRE_CROP
from extract.flow import FlowConfig
from extract.partial import assemble, centre_crop, restrict, settings_from_record
from extract.prepare import Prepared, flow_pairs
from extract.sampling import tsn_positions
from extract.video import VideoSettings


def _prepared(n: int, T: int, L: int) -> Prepared:
    """A record as prepare_video makes it, frames holding their decoded index."""
    samp = tsn_positions(n, T, L)
    pairs, slot = flow_pairs(samp.flow_index)
    used, inv = np.unique(np.concatenate([samp.frame_index, pairs.reshape(-1)]), return_inverse=True)
    frames = np.broadcast_to(used[:, None, None, None], (len(used), 2, 2, 3)).astype(np.uint8)
    return Prepared("v.mp4", n, 25.0, samp.frame_index, frames, inv[:T], inv[T:].reshape(-1, 2), slot, None)


@pytest.mark.parametrize("n,T,L,keep", [(200, 10, 5, [1, 4, 8]), (30, 10, 5, [2, 3]), (12, 10, 5, [0, 9])])
def test_restrict_keeps_the_kept_stacks_pairs(n, T, L, keep):
    p = _prepared(n, T, L)
    sub = restrict(p, np.array(keep))
    assert sub.frame_index.tolist() == p.frame_index[keep].tolist()
    # the same decoded frames at each kept position and in each slot of its stack
    assert (sub.frames[sub.rgb_slot][:, 0, 0, 0] == p.frames[p.rgb_slot[keep]][:, 0, 0, 0]).all()
    want = p.frames[p.pairs[p.pair_slot[keep]]][..., 0, 0, 0]          # (m, L, 2) decoded indices
    got = sub.frames[sub.pairs[sub.pair_slot]][..., 0, 0, 0]
    assert (got == want).all()
    distinct = {tuple(x) for x in want.reshape(-1, 2).tolist()}
    assert len(sub.pairs) == len(distinct) <= len(keep) * L
    if n >= 200:
        assert len(sub.pairs) == len(keep) * L       # stacks far apart share no pair: m·L fields


def test_assemble_places_kept_rows_and_the_centre_crop():
    kept = np.full((2, 3, 4), 7, np.float16)
    centre = np.arange(5, dtype=np.float16)[:, None, None] * np.ones((5, 1, 4), np.float16)
    out = assemble(5, 3, np.array([1, 3]), kept, centre, centre=1)
    assert out.shape == (5, 3, 4) and out.dtype == np.float16
    assert (out[[1, 3]] == 7).all()
    assert (out[[0, 2, 4], 1, 0] == [0, 2, 4]).all() and (out[[0, 2, 4]][:, [0, 2]] == 0).all()


def test_settings_round_trip_through_the_store_record():
    s = VideoSettings(frames=7, flow_stack=3, crops=3, feature_maps=True,
                      flow=FlowConfig(algorithm="tvl1", params=(("epsilon", 0.05),)))
    back = settings_from_record(s.record())
    assert back.record() == s.record() and back.sha256() == s.sha256()
    assert settings_from_record(VideoSettings(flow=None, streams=("rgb",)).record()).flow is None


@pytest.mark.parametrize("K", [1, 3, 10])
@pytest.mark.parametrize("size", [(340, 256), (256, 340)])
def test_centre_crop_index_is_the_layouts(K, size):
    assert centre_crop(K, VideoSettings(size=size, crops=K), 224) == CENTRE_CROP[K]
