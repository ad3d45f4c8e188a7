"""A flow algorithm that takes a fixed time per pair: the preemption tests' slow video
(tests/test_durability.py). With the seconds-fast tiny_random backbone a run of 8 videos
ends before a signal sent after its first one arrives; ``seconds`` per pair keeps the run
going for as long as the test needs. Zero flow, counted at 0 FLOPs."""
from __future__ import annotations

import time

import numpy as np

from extract.flow_cost import COUNTED, FieldCosts, FlowCost
from extract.flow_registry import register_flow

NO_COST = FlowCost(lambda p: (COUNTED, "a sleep: no arithmetic"),
                   lambda p, prev, nxt, run: FieldCosts(np.zeros(prev.shape[0])))


@register_flow("sleepy", lambda: {"seconds": 0.5}, cost=NO_COST)
def sleepy(prev: np.ndarray, nxt: np.ndarray, params: dict) -> np.ndarray:
    """Zero flow after ``seconds`` per pair (a stand-in for an expensive flow)."""
    time.sleep(float(params["seconds"]) * prev.shape[0])
    return np.zeros(prev.shape + (2,), np.float32)
