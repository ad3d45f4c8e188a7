"""Planted state caches: a known answer to test and benchmark the agents against.

In every video only ``n_key`` positions (at random places) show the action: their features
carry the class prototype plus a class-independent "action" direction, and the frame
classifier favours the true class. The other positions carry *misleading* evidence: they
favour one of two distractor classes just as confidently, and outnumber the key positions,
so averaging every position (uniform) is usually wrong, picking by classifier confidence
(max-response) cannot tell the two apart, and only a method that learns what a key
position looks like finds them. The oracle (which knows the label) finds them by construction.
"""
from __future__ import annotations

import numpy as np
import torch

from agents.base import States


def planted_states(V=256, T=25, K=1, D=64, C=8, *, n_key=5, strength=2.0, noise=1.0,
                   seed=0, with_maps=False, map_size=4) -> States:
    """Return States of V videos with labels in [0, C) balanced, features (V,T,K,D) float32.

    Logits: key positions carry ``strength`` on the true class, misleading positions carry
    ``strength`` on one of the video's two distractor classes; all positions get N(0, noise)
    logit noise, so per-frame confidence does not reveal which positions are key.
    """
    g = np.random.default_rng(seed)
    labels = np.arange(V) % C
    g.shuffle(labels)
    protos = g.normal(size=(C, D)).astype(np.float32)
    action = g.normal(size=D).astype(np.float32)
    action /= np.linalg.norm(action) / 3.0
    feats = g.normal(scale=noise, size=(V, T, K, D)).astype(np.float32)
    logits = g.normal(scale=noise, size=(V, T, K, C)).astype(np.float32)
    key = np.zeros((V, T), dtype=bool)
    for v in range(V):
        key[v, g.choice(T, size=n_key, replace=False)] = True
        wrong = g.choice(np.delete(np.arange(C), labels[v]), size=2, replace=False)
        for t in range(T):
            cls = labels[v] if key[v, t] else wrong[t % 2]
            feats[v, t] += protos[cls] + (action if key[v, t] else 0.0)
            logits[v, t, :, cls] += strength
    motion = g.gamma(2.0, 1.0, size=(V, T)).astype(np.float32)   # uninformative on purpose
    maps = None
    if with_maps:
        # Spatial variant: the evidence sits in one cell of a map_size x map_size grid.
        maps = g.normal(scale=noise, size=(V, T, K, map_size, map_size, D)).astype(np.float32)
        cell = g.integers(0, map_size, size=(V, 2))
        for v in range(V):
            maps[v, :, :, cell[v, 0], cell[v, 1], :] += feats[v] * 1.0
    st = States(features=torch.from_numpy(feats), logits=torch.from_numpy(logits),
                labels=torch.from_numpy(labels.astype(np.int64)), motion=torch.from_numpy(motion),
                feature_maps=None if maps is None else torch.from_numpy(maps))
    st.key_mask = torch.from_numpy(key)   # ground truth for tests: (V, T) bool
    return st
