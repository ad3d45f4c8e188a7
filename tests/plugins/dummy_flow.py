"""A whole flow algorithm in one file, outside framesel's packages: registered through
FRAMESEL_PLUGINS (data/plugins.py), it is a ``framesel extract --flow`` choice, the store
records it and its cost, and evaluate's report prices it (tests/test_plugins.py). Not
optical flow: the temporal difference of the two frames in both channels, scaled by
``gain``; one subtraction and one multiplication per pixel and channel."""
from __future__ import annotations

import numpy as np

from extract.flow_cost import COUNTED, FieldCosts, FlowCost
from extract.flow_registry import register_flow

FLOPS_PER_PIXEL = 4      # 2 channels x (1 subtraction + 1 multiplication)

FRAMEDIFF_COST = FlowCost(
    lambda p: (COUNTED, "a subtraction and a multiplication per pixel and channel"),
    lambda p, prev, nxt, run: FieldCosts(np.full(prev.shape[0], FLOPS_PER_PIXEL * prev.shape[1] * prev.shape[2] / 1e9)))


@register_flow("framediff", lambda: {"gain": 0.5}, cost=FRAMEDIFF_COST)
def framediff(prev: np.ndarray, nxt: np.ndarray, params: dict) -> np.ndarray:
    """The temporal difference of two frames, scaled by ``gain``, in both channels (not optical flow)."""
    d = (nxt.astype(np.float32) - prev.astype(np.float32)) * float(params["gain"])
    return np.stack([d, d], axis=-1)
