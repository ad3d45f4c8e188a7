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

from pathlib import Path

import numpy as np
import torch

from agents.base import States
from data.layout import Layout, StreamSpec, VideoResult
from data.store import create_store, open_store


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
                feature_maps=None if maps is None else torch.from_numpy(maps), key=torch.from_numpy(key))
    return st


def write_planted_store(root: Path, *, train: int = 240, test: int = 240, T: int = 25, n_key: int = 3,
                        D: int = 64, C: int = 8, map_size: int = 4, seed: int = 0,
                        name: str = "planted.zarr") -> tuple[Path, Path, Path]:
    """A real store (``root/name``: Zarr, or HDF5 for ``*.h5``) of ``train + test`` planted videos from one
    :func:`planted_states` call, and its two list files (``root/train.txt``, ``root/test.txt``).

    rgb/features (V, T, 1, D) float16, rgb/feature_maps (V, T, 1, s, s, D) float16, motion
    (V, T) float32, rgb/logits (V, T, 1, C) float32 — the planted logits with their provenance.
    Returns (store, train list, test list)."""
    V = train + test
    st = planted_states(V=V, T=T, K=1, D=D, C=C, n_key=n_key, seed=seed, with_maps=True, map_size=map_size)
    paths = tuple(f"planted/v{i:04d}.mp4" for i in range(V))
    layout = Layout(paths=paths, labels=st.labels.numpy().astype(np.int32), T=T,
                    streams=(StreamSpec("rgb", 1, D, 0, (map_size, map_size, D)),),
                    attrs={"classes": [f"class{i}" for i in range(C)], "multilabel": False, "T": T, "crops": 1,
                           "flow_stack": 1, "config_sha256": f"planted-seed{seed}",
                           "backbone": {"rgb": {"name": "planted", "gflops_per_frame": 0.0}}})
    store = root / name            # planted.zarr, or planted.h5 for an HDF5 store
    with create_store(store, layout) as s:
        for i in range(V):
            s.write_video(i, VideoResult(
                num_frames=T, fps=25.0, frame_index=np.arange(T, dtype=np.int32), motion=st.motion[i].numpy(),
                streams={"rgb": {"features": st.features[i].numpy().astype(np.float16),
                                 "feature_maps": st.feature_maps[i].numpy().astype(np.float16)}}))
    with open_store(store, "a") as s:
        s.add_logits("rgb", st.logits.numpy(), {
            "source": "agents.synthetic.planted_states", "seed": seed, "n_key": n_key, "strength": 2.0,
            "noise": 1.0, "note": "planted logits (the known answer), not a trained head"})
    lists = []
    for name, rows in (("train", range(train)), ("test", range(train, V))):
        lst = root / f"{name}.txt"
        lst.write_text("".join(f"{paths[i]} {int(st.labels[i])}\n" for i in rows))
        lists.append(lst)
    return store, lists[0], lists[1]
