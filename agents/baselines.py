"""Non-learned selectors: the trivial baselines every report carries (GUIDE §5, 003 §4).

Each is a :class:`~agents.base.Selector` registered by name whose ``score(states)`` gives a
(V, T, K) float32 importance; ``select`` keeps the top m. ``uniform`` and ``constant``
choose their cells by rule, not by rank, and override ``select``. Every constructor has
defaults only, so ``selector_class(name)()`` works.

``dense`` (every position) is ``uniform`` with ``m=None``: not registered twice.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from agents.base import Selection, Selector, States, register, top_m_mask
from data.errors import InputError


def _selection(selector: Selector, states: States, scores: torch.Tensor, keep: torch.Tensor, mode: str,
               alpha: float) -> Selection:
    """Package a rule-made keep mask (V, T, K) bool like :meth:`Selector.select` does (video
    scores under the selector's consensus)."""
    video_scores = selector.video_scores(states, keep, alpha)
    per = keep.any(dim=2).sum(1) if mode == "frame" else keep.sum(dim=(1, 2))
    return Selection(scores, keep, video_scores, per.long(), mode)


def _like(states: States, values: torch.Tensor) -> torch.Tensor:
    """Broadcast per-position values (V, T) or (T,) to (V, T, K) float32 on the states' device."""
    V, T, K, _, _ = states.shape
    values = values.to(device=states.logits.device, dtype=torch.float32)
    if values.dim() == 1:
        values = values[None, :].expand(V, T)
    return values[:, :, None].expand(V, T, K).contiguous()


def _uniform_noise(states: States, seed: int, mode: str) -> torch.Tensor:
    """(V, T, K) float32 U(0,1) draws, one per position (shared by its crops) in frame mode,
    one per cell in region mode: a counter-based hash (splitmix64) of (seed, the video's
    store row, position, crop). Each video's draw depends on nothing but itself, so an
    evaluation repeats, and gives every video the same draw whether it is scored alone, in
    a block (evaluate/methods.select_in_blocks) or with the whole split."""
    V, T, K, _, _ = states.shape
    k = K if mode == "region" else 1
    cell = (np.asarray(states.video_ids, dtype=np.uint64)[:, None, None] * np.uint64(T * K)
            + np.arange(T, dtype=np.uint64)[None, :, None] * np.uint64(K)
            + np.arange(k, dtype=np.uint64)[None, None, :])
    z = cell + np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) % 2**64)    # splitmix64's golden-ratio step
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    u = torch.from_numpy(((z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)))
    return u.expand(V, T, K).to(states.logits.device).contiguous()


def evenly_spaced(T: int, m: int) -> torch.Tensor:
    """The m positions TSN's test protocol picks out of T: ⌊(i + 0.5)·T/m⌋, i = 0..m−1.

    (m,) int64. Floor, not round: it is TSN's ``int(tick/2 + tick*i)`` and it always stays
    inside segment i (round-half-up gives T for i = m−1 when m = T).
    """
    i = torch.arange(m, dtype=torch.float64)
    return torch.floor((i + 0.5) * T / m).long()


def uniform_keep(shape: tuple[int, int, int], m: int | None, device=None) -> torch.Tensor:
    """TSN's m evenly spaced positions, every crop of them: (V, T, K) bool; m=None or m >= T
    keeps every position (the same in frame and region mode: no cell is ranked)."""
    V, T, K = shape
    if m is None or m >= T:
        return torch.ones(V, T, K, dtype=torch.bool, device=device)
    if m < 1:
        raise InputError(f"m must be >= 1, not {m}")
    keep = torch.zeros(V, T, K, dtype=torch.bool, device=device)
    keep[:, evenly_spaced(T, m).to(keep.device), :] = True
    return keep


@register("uniform")
class Uniform(Selector):
    """Evenly spaced m positions (TSN); m=None keeps every position (the dense baseline)."""

    needs = "none"          # chooses without computing anything (evaluate/compute.py)

    def score(self, states: States) -> torch.Tensor:
        V, T, K, _, _ = states.shape
        return torch.ones(V, T, K, dtype=torch.float32, device=states.logits.device)

    def select(self, states, m, *, mode="frame", alpha=0.0) -> Selection:
        scores = self.score(states)
        keep = uniform_keep(tuple(scores.shape), m, scores.device)
        if not bool(keep.all()):
            scores = keep.float()
        with torch.no_grad():
            return _selection(self, states, scores, keep, mode, alpha)


@register("random")
class Random(Selector):
    """m positions at random (seeded; uniform over positions, or over cells in region mode)."""

    needs = "none"          # chooses without computing anything (evaluate/compute.py)

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, states: States, mode: str = "frame") -> torch.Tensor:
        return _uniform_noise(states, self.seed, mode)

    def select(self, states, m, *, mode="frame", alpha=0.0) -> Selection:
        scores = self.score(states, mode)
        with torch.no_grad():
            return _selection(self, states, scores, top_m_mask(scores, m, mode), mode, alpha)


@register("constant")
class Constant(Selector):
    """A policy that keeps each position with the same probability p, whatever it sees.

    What a learned Bernoulli agent that "learns nothing" looks like (vsumm-reinforce #5): with
    m=None it keeps a variable number, Bernoulli(p) per position (per cell in region mode);
    with m given it is ``random``. A draw that keeps nothing falls back to every position,
    the same convention as the ``as`` reward (no selection = no change).
    """

    needs = "none"          # chooses without computing anything (evaluate/compute.py)

    variable_m = True

    def __init__(self, p: float = 0.5, seed: int = 0):
        if not 0.0 < p <= 1.0:
            raise InputError(f"constant keep probability must be in (0, 1], not {p}")
        self.p, self.seed = p, seed

    def score(self, states: States, mode: str = "frame") -> torch.Tensor:
        return _uniform_noise(states, self.seed, mode)

    def select(self, states, m, *, mode="frame", alpha=0.0) -> Selection:
        scores = self.score(states, mode)
        if m is not None:
            keep = top_m_mask(scores, m, mode)
        else:
            keep = scores < self.p
            empty = ~keep.flatten(1).any(dim=1)
            keep[empty] = True
        with torch.no_grad():
            return _selection(self, states, scores, keep, mode, alpha)


@register("max_response")
class MaxResponse(Selector):
    """The most confident cells first: max softmax probability over classes (003)."""

    def score(self, states: States) -> torch.Tensor:
        return states.probs.max(dim=-1).values.float()


@register("entropy")
class Entropy(Selector):
    """Negative entropy of the per-frame softmax: the least uncertain cells first."""

    def score(self, states: States) -> torch.Tensor:
        logp = torch.log_softmax(states.logits.float(), dim=-1)
        return (logp.exp() * logp).sum(-1)


@register("motion")
class Motion(Selector):
    """The positions with the most motion (mean flow magnitude, ``states.motion``) first."""

    needs = "motion"        # reads the motion score only (evaluate/compute.py)

    def score(self, states: States) -> torch.Tensor:
        if states.motion is None:
            raise InputError("the 'motion' baseline needs the store's `motion` node (mean flow magnitude, "
                             "written when flow is computed); this store has none (extracted with --flow "
                             "none, or imported features)")
        return _like(states, states.motion)


def coarse_to_fine_order(T: int) -> list[int]:
    """Positions in the order T/2, T/4, 3T/4, T/8, 3T/8, 5T/8, 7T/8, … (floored,
    duplicates skipped), then whatever a power-of-two grid never hits, in index order."""
    order, seen = [], set()
    levels = max(1, math.ceil(math.log2(max(T, 2)))) + 1
    for level in range(1, levels + 1):
        for j in range(1, 2 ** level, 2):
            t = (j * T) // 2 ** level
            if t not in seen:
                seen.add(t)
                order.append(t)
    order += [t for t in range(T) if t not in seen]
    return order


@register("fixed_order")
class FixedOrder(Selector):
    """A fixed coarse-to-fine order, the same for every video (an anytime uniform)."""

    needs = "none"          # chooses without computing anything (evaluate/compute.py)

    def score(self, states: States) -> torch.Tensor:
        T = states.shape[1]
        rank = torch.empty(T, dtype=torch.float32)
        rank[torch.tensor(coarse_to_fine_order(T))] = torch.arange(T, 0, -1, dtype=torch.float32)
        return _like(states, rank)


@register("oracle")
class Oracle(Selector):
    """Upper bound that cheats with the label: score = softmax prob of the true class
    (multi-label: the max over the true classes)."""

    def score(self, states: States) -> torch.Tensor:
        probs = states.probs.float()
        if states.multilabel:
            truth = states.labels.to(probs.device).bool()[:, None, None, :]
            return probs.masked_fill(~truth, float("-inf")).max(dim=-1).values
        idx = states.labels.to(probs.device).long()[:, None, None, None]
        return probs.gather(-1, idx.expand(*probs.shape[:3], 1)).squeeze(-1)


@register("key_oracle")
class KeyOracle(Selector):
    """What *finding the action* is worth (untrimmed videos with a truth file): in a video
    with key positions (``states.key``: a positive's positions inside its target segments)
    it keeps m of them, evenly spread over them (all of them, then evenly spaced others,
    when there are fewer than m); in a video without any (a negative) it keeps uniform's
    evenly spaced m. It reads the truth, not the classifier: unlike ``oracle``, which
    keeps the frames scoring highest on the labelled class, it cannot pick a negative's
    most negative-looking frame, so its gain over uniform comes from positives alone."""

    needs = "none"          # chooses without computing anything (evaluate/compute.py)
    needs_key = True        # evaluate offers it only with --truth

    def score(self, states: States) -> torch.Tensor:
        if states.key is None:
            raise InputError("the 'key_oracle' baseline needs the key mask (states.key): evaluate with --truth FILE")
        return _like(states, states.key.float())

    def select(self, states, m, *, mode="frame", alpha=0.0) -> Selection:
        scores = self.score(states)
        V, T, K, _, _ = states.shape
        if m is not None and m < 1:
            raise InputError(f"m must be >= 1, not {m}")
        if m is None or m >= T:
            keep = torch.ones_like(scores, dtype=torch.bool)
        else:
            frame = torch.zeros(V, T, dtype=torch.bool)
            for v, key in enumerate(states.key.cpu()):
                frame[v, key_positions(key, m)] = True
            keep = frame[:, :, None].expand(V, T, K).to(scores.device).clone()
        with torch.no_grad():
            return _selection(self, states, keep.float(), keep, mode, alpha)


def key_positions(key: torch.Tensor, m: int) -> torch.Tensor:
    """(m,) int64 positions :class:`KeyOracle` keeps of one video's (T,) bool key mask."""
    inside, outside = torch.nonzero(key).flatten(), torch.nonzero(~key).flatten()
    if not len(inside):
        return evenly_spaced(len(key), m)
    if len(inside) >= m:
        return inside[evenly_spaced(len(inside), m)]
    return torch.cat([inside, outside[evenly_spaced(len(outside), m - len(inside))]])


@register("cut")
class CutDetector(Selector):
    """A shot-boundary detector on the cached features, no truth: the positions whose
    features jump most from a neighbour first. score_t = max(δ(t−1, t), δ(t, t+1)), δ the
    cosine distance of the crop-mean features of two adjacent positions (the first and last
    position have one neighbour). On untrimmed composites it says whether the boundaries
    between clips give the answer away (benchmarks/untrimmed.py's shortcut check)."""

    uses_features = True    # evaluate reads the features for it (evaluate/methods.reads_features)

    def score(self, states: States) -> torch.Tensor:
        f = torch.nn.functional.normalize(states.features.float().mean(dim=2), dim=-1)   # (V, T, D)
        V, T = f.shape[:2]
        if T < 2:
            return _like(states, torch.zeros(V, T))
        jump = 1.0 - (f[:, 1:] * f[:, :-1]).sum(-1)                                       # (V, T-1)
        pad = torch.full((V, 1), float("-inf"), device=jump.device)
        return _like(states, torch.maximum(torch.cat([pad, jump], 1), torch.cat([jump, pad], 1)))
