"""The classifier CL of ``framesel head`` (000 "Baseline model"): per-frame logits from
cached features.

Trained on the cached features (V, T, K, D) of the training videos of one stream with the
TSN consensus: the video's logits are the mean of the per-cell logits over positions and
crops, fed to cross-entropy (multi-label: binary cross-entropy per class). At test time it
maps ANY features (V, T, K, D) to per-frame logits (V, T, K, C) float32, which become the
``<stream>/logits`` node and the agents' states s_t^r.

Features are read a mini-batch of videos at a time and cast to float32 there, so a
float16 store of UCF101 (6 GB) never has to fit in memory as float32; given a
:class:`data.store_rows.StoreRows` view (``framesel head --load stream``) nothing but the
batches in flight is in memory, read ahead on background threads.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agents.options import check_ranges
from agents.training import fit
from data.errors import InputError, StoreError
from data.store_rows import is_streamed, prefetch
from data.torchfile import state_sha256

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class HeadConfig:
    """hidden=0: dropout + one linear layer (TSN's head); hidden>0: linear-ReLU-dropout-linear.
    ``val_fraction`` of the videos (seeded draw) is held out and scored each epoch;
    ``momentum`` applies to SGD only (000 trains CL with SGD, momentum 0.9, wd 5e-4)."""

    hidden: int = 0
    dropout: float = 0.5
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    optimizer: str = "adam"
    momentum: float = 0.9
    val_fraction: float = 0.0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"head optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), not {self.val_fraction}")
        check_ranges("head", self, at_least_one=("epochs", "batch_size"), non_negative=("hidden", "weight_decay"),
                     positive=("lr",), unit_open=("dropout", "momentum"))


def build_head(feature_dim: int, num_classes: int, cfg: HeadConfig) -> nn.Module:
    """(..., D) float32 -> (..., C) float32 logits. Rebuilds a saved head from its config."""
    if cfg.hidden == 0:
        return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(feature_dim, num_classes))
    return nn.Sequential(nn.Linear(feature_dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
                         nn.Linear(cfg.hidden, num_classes))


def _check(features, labels, num_classes: int, multilabel: bool, per_position: bool = False) -> np.ndarray:
    """Validate shapes; return labels as int64 (V,), int64 (V, T) per position, or float32 (V, C)."""
    if getattr(features, "ndim", None) != 4:
        raise InputError(f"features must be (V, T, K, D), got shape {getattr(features, 'shape', None)}")
    labels = np.asarray(labels)
    V = features.shape[0]
    if V < 1:
        raise InputError("no training videos")
    if labels.shape[0] != V:
        raise InputError(f"{labels.shape[0]} labels for {V} videos")
    if per_position:
        if multilabel:
            raise InputError("a head trained per position needs single-label classes")
        if labels.shape != tuple(features.shape[:2]) or labels.min() < 0 or labels.max() >= num_classes:
            raise InputError(f"per-position labels must be (V, T) = {tuple(features.shape[:2])} integers in "
                             f"[0, {num_classes}), got {labels.shape}")
        return labels.astype(np.int64)
    if multilabel:
        if labels.shape != (V, num_classes):
            raise InputError(f"multi-label labels must be (V, C) = ({V}, {num_classes}), got {labels.shape}")
        return labels.astype(np.float32)
    if labels.ndim != 1 or labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(f"labels must be (V,) integers in [0, {num_classes})")
    return labels.astype(np.int64)


def _batch(features, labels: np.ndarray, idx: np.ndarray, device):
    """Read videos ``idx`` (sorted: h5py needs increasing indices) -> float32 tensors; a
    streamed view is read as float16 and converted on the device."""
    idx = np.sort(idx)
    if is_streamed(features):
        x = torch.from_numpy(features.numpy(idx, np.float16)).to(device).float()
    else:
        x = torch.from_numpy(np.asarray(features[idx], dtype=np.float32)).to(device)
    return x, torch.from_numpy(labels[idx]).to(device)


def _consensus_loss(head: nn.Module, x: torch.Tensor, y: torch.Tensor, multilabel: bool, weight=None):
    """x: (B, T, K, D) -> (loss, video logits (B, C)): TSN average consensus, then CE/BCE.
    Per-position labels y (B, T): each position's crop-mean logits (B, T, C) against its own
    label, cross-entropy weighted by ``weight`` (C,), returned as the (B, T, C) logits."""
    if y.dim() == 2 and not multilabel:
        frames = head(x).mean(dim=2)
        return nn.functional.cross_entropy(frames.flatten(0, 1), y.flatten(), weight=weight), frames
    video = head(x).mean(dim=(1, 2))
    if multilabel:
        return nn.functional.binary_cross_entropy_with_logits(video, y), video
    return nn.functional.cross_entropy(video, y), video


def _hits(video: torch.Tensor, y: torch.Tensor, multilabel: bool) -> int:
    """Top-1 hits; multi-label: the top-1 class is one of the true ones; per position
    ((B, T, C) logits, (B, T) labels): the share of the video's positions right, summed."""
    if video.dim() == 3:
        return float((video.argmax(-1) == y).float().mean(1).sum())
    top = video.argmax(dim=1)
    if multilabel:
        return int(y.gather(1, top[:, None]).squeeze(1).gt(0).sum())
    return int((top == y).sum())


def _pass(head, features, labels, order, cfg, multilabel, device, optimizer=None, weight=None):
    """One pass over the videos ``order``; trains when ``optimizer`` is given.
    Returns (mean loss, top-1 accuracy)."""
    head.train(optimizer is not None)
    total, hits = 0.0, 0
    parts = [order[start:start + cfg.batch_size] for start in range(0, len(order), cfg.batch_size)]
    read = lambda part: _batch(features, labels, part, device)  # noqa: E731
    with torch.set_grad_enabled(optimizer is not None):
        for x, y in prefetch(read, parts, depth=4 if is_streamed(features) else 0):
            loss, video = _consensus_loss(head, x, y, multilabel, weight)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total += float(loss.detach()) * len(x)
            hits += _hits(video.detach(), y, multilabel)
    return total / max(len(order), 1), hits / max(len(order), 1)


def _optimizer(head: nn.Module, cfg: HeadConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _split(V: int, cfg: HeadConfig) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(cfg.seed).permutation(V)
    n_val = int(round(V * cfg.val_fraction))
    if cfg.val_fraction > 0 and (n_val < 1 or n_val >= V):
        raise InputError(f"val_fraction {cfg.val_fraction} of {V} videos leaves an empty split")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _labels_sha(labels: np.ndarray) -> str:
    h = hashlib.sha256(str(labels.shape).encode())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def position_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) float32 class weights for per-position training: inverse frequency over the
    positions (mean 1 over the classes present), so a class filling 8 % of the positions
    (fight segments in composites) weighs as much in the loss as the rest; a class with no
    position gets 0."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return w.astype(np.float32)


class HeadRun:
    """The head as a trainee of the agents' one training template (agents/training.py
    :func:`fit`): the template runs the epochs, the seeding, the progress bar and the history
    rows (``epoch``, ``lr``, ``seconds`` beside the head's ``loss``, ``accuracy`` and, with
    held-out videos, ``val_loss``, ``val_accuracy``); this holds what one epoch of the head
    is. A fresh run draws the head's weights from the seed (``start_fresh``), then dropout
    from torch's RNG and the video order from ``seed + 1`` (numpy), as the head always has."""

    name = "head"
    fit_inputs: tuple[str, ...] = ()

    def __init__(self, features, labels: np.ndarray, num_classes: int, cfg: HeadConfig, *,
                 multilabel: bool, per_position: bool):
        self.features, self.labels, self.num_classes = features, labels, num_classes
        self.config, self.seed, self.multilabel = cfg, cfg.seed, multilabel
        self.train_idx, self.val_idx = _split(features.shape[0], cfg)
        self.weights = position_weights(labels[self.train_idx], num_classes) if per_position else None
        self.history, self.training_state = [], {}
        self.module = build_head(features.shape[-1], num_classes, cfg)   # its weights: start_fresh's

    def check_states(self, features, what: str) -> None:
        """Checked once by :func:`_check` before the run."""

    def stages(self) -> tuple[tuple[str, int], ...]:
        return (("train", self.config.epochs),)

    def total_epochs(self) -> int:
        return self.config.epochs

    def prepare(self, ctx) -> None:
        self.shuffle = np.random.default_rng(self.seed + 1)
        self.weight = None if self.weights is None else torch.from_numpy(self.weights).to(ctx.device)

    def start_fresh(self, ctx) -> None:
        self.module = build_head(self.features.shape[-1], self.num_classes, self.config).to(ctx.device)

    def make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        return _optimizer(self.module, self.config)

    def lr_at(self, epoch: int) -> None:
        return None

    def train_epoch(self, ctx, epoch: int) -> dict:
        order = self.shuffle.permutation(self.train_idx)
        loss, acc = _pass(self.module, self.features, self.labels, order, self.config, self.multilabel,
                          ctx.device, ctx.optimizer, self.weight)
        return {"loss": loss, "accuracy": acc}

    def validate(self, ctx, epoch: int) -> dict:
        loss, acc = _pass(self.module, self.features, self.labels, self.val_idx, self.config, self.multilabel,
                          ctx.device, weight=self.weight)
        return {"val_loss": loss, "val_accuracy": acc}


def train_head(features, labels, num_classes: int, cfg: HeadConfig = HeadConfig(), *,
               multilabel: bool = False, device="cpu", progress: bool = False,
               train_list_sha256: str | None = None, per_position: bool = False):
    """Train the classifier CL on cached features with TSN consensus.

    features: (V, T, K, D) float16/float32 numpy array (or any array supporting sorted
    fancy indexing along axis 0, e.g. h5py); labels: (V,) int class ids, or (V, C) multi-hot
    when ``multilabel``. Returns ``(head, provenance)``: the trained module in eval mode on
    ``device`` and a JSON-able dict with the config, seed, sha256 of the training list (or of
    the labels when no list sha is given), final train (and validation) loss/accuracy and the
    per-epoch history.

    ``per_position``: labels are (V, T) int, each position's own class (an untrimmed video's
    segment classes, ``framesel head --truth``): no consensus over positions; every position's
    crop-mean logits meet its label in a cross-entropy weighted by :func:`position_weights`
    (accuracies are then per position). A departure from the papers, which train CL on
    trimmed clips with the clip's label: the segments are those trimmed clips, in place.
    """
    labels = _check(features, labels, num_classes, multilabel, per_position)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):   # the seeds are the template's; the caller's RNG stays as it was
        run = HeadRun(features, labels, num_classes, cfg, multilabel=multilabel, per_position=per_position)
        history = fit(run, features, device=device, progress=progress,
                      val=features if len(run.val_idx) else None)
    head, train_idx, val_idx, weights = run.module, run.train_idx, run.val_idx, run.weights
    provenance = {
        "config": dataclasses.asdict(cfg), "seed": cfg.seed, "multilabel": multilabel,
        "num_classes": num_classes, "feature_dim": int(features.shape[-1]), "num_train": int(len(train_idx)),
        "num_val": int(len(val_idx)),
        "train_list_sha256": train_list_sha256 or _labels_sha(labels),
        "train_list_sha256_source": "list file" if train_list_sha256 else "labels array",
        "final_train_loss": history[-1]["loss"], "final_train_accuracy": history[-1]["accuracy"],
        "history": history, "seconds": time.perf_counter() - t0, "torch": torch.__version__,
        "labels": "per position" if per_position else "per video"}
    if per_position:
        provenance["position_class_weights"] = weights.tolist()
    if len(val_idx):
        provenance["final_val_loss"] = history[-1]["val_loss"]
        provenance["final_val_accuracy"] = history[-1]["val_accuracy"]
    return head, provenance


def head_sha256(head: nn.Module) -> str:
    """sha256 of the head's weights (float32, in state_dict order): its logits' identity."""
    return state_sha256(head.state_dict())


def stored_head(store, stream: str) -> nn.Module:
    """The ``framesel head`` classifier recorded in ``store`` for ``stream``, rebuilt from its
    provenance and kept weights, in eval mode; StoreError unless its sha256 is the recorded one."""
    prov = store.logits_provenance().get(stream) or {}
    if prov.get("by") != "framesel head" or not prov.get("head_sha256"):
        raise StoreError(f"{store.path}: stream {stream!r} has no head recorded by `framesel head` "
                         f"(run `framesel head {store.path} --train LIST`)")
    head = build_head(int(prov["feature_dim"]), int(prov["num_classes"]), HeadConfig(**prov["config"]))
    weights = store.head_weights(stream, list(head.state_dict()))
    try:
        head.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    except RuntimeError as err:
        raise StoreError(f"{store.path}: the kept head of {stream!r} does not fit its record ({err})") from None
    if head_sha256(head) != prov["head_sha256"]:
        raise StoreError(f"{store.path}: the kept head of {stream!r} is not the one its logits came from "
                         "(sha256 differs); run `framesel head` again")
    return head.eval()


def apply_head(head: nn.Module, features, *, batch_size: int = 256, device="cpu") -> np.ndarray:
    """Per-frame logits of any features: (V, T, K, D) float16/float32 -> (V, T, K, C) float32."""
    if getattr(features, "ndim", None) != 4:
        raise InputError(f"features must be (V, T, K, D), got shape {getattr(features, 'shape', None)}")
    head = head.to(device).eval()
    out = []
    with torch.no_grad():
        for start in range(0, features.shape[0], batch_size):
            x = torch.from_numpy(np.asarray(features[start:start + batch_size], dtype=np.float32))
            out.append(head(x.to(device)).float().cpu().numpy())
    if not out:
        C = [m for m in head.modules() if isinstance(m, nn.Linear)][-1].out_features
        return np.zeros((0, *features.shape[1:3], C), dtype=np.float32)
    return np.concatenate(out, axis=0)
