"""The one interface every selection method shares (GUIDE §6.7–6.8).

A *selector* looks at the cached state tensors of a batch of videos and scores every
(position, crop) cell; ``select`` keeps the top m and predicts the video's class from what
it kept. Non-learned baselines implement only :meth:`Selector.score`; learned agents add a
frozen ``Config`` dataclass, ``fit`` and a checkpoint that alone rebuilds them.

Shapes: V videos, T positions, K crops, D feature size, C classes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from agents.checkpoint import (agent_from_checkpoint, append_jsonl, load_agent,  # noqa: F401  (re-exported)
                               restore_weights, write_jsonl)
from agents.registry import register, selector_class, selector_names  # noqa: F401  (re-exported)
from agents.states import MODES, States  # noqa: F401  (re-exported: the agents' front door)
from data.errors import InputError, StoreError
from data.space import is_full, short_error

@dataclass(frozen=True)
class Selection:
    """What a method kept and what it predicts from it.

    scores: (V, T, K) float32 importance (higher = keep); keep: (V, T, K) bool;
    video_scores: (V, C) float32 class scores in logit space; num_kept: (V,) int64 positions
    kept (frame mode) or cells kept (region mode).
    """

    scores: torch.Tensor
    keep: torch.Tensor
    video_scores: torch.Tensor
    num_kept: torch.Tensor
    mode: str = "frame"

    def cpu(self) -> "Selection":
        """The same selection with every tensor on the CPU."""
        return Selection(self.scores.cpu(), self.keep.cpu(), self.video_scores.cpu(), self.num_kept.cpu(), self.mode)


def top_m_mask(scores: torch.Tensor, m: int | None, mode: str = "frame") -> torch.Tensor:
    """Keep the m best positions (frame mode: ranked by the mean score over crops, every crop
    of a kept position kept) or, in region mode (000 Table 3), the m best positions of each
    crop's own sequence of T volumes.

    scores: (V, T, K) -> (V, T, K) bool. ``m=None`` or m >= T keeps everything. Ties break by
    position, lowest first, always: a stable descending sort ranks, because ``torch.topk``
    does not promise any order among equal values (on CPU it keeps positions 15–18 of a
    constant (1, 25) score for m=4). So a constant score equals the first m positions —
    callers wanting random tie breaks add noise first.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, not {mode!r}")
    V, T, K = scores.shape
    if m is None or m >= T:
        return torch.ones_like(scores, dtype=torch.bool)
    if m < 1:
        raise InputError(f"m must be >= 1, not {m}")
    ranked = scores.mean(dim=2, keepdim=True) if mode == "frame" else scores   # (V, T, 1 or K)
    idx = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, :m]
    keep = torch.zeros_like(ranked, dtype=torch.bool).scatter_(1, idx, True)
    return keep.expand(V, T, K).clone()


def aggregate(logits: torch.Tensor, keep: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
    """Video-level scores: weighted mean of per-frame logits, weight 1 on kept cells and α on
    dropped ones (000 eq. 10, Table 4; α = 0 is pure hard attention).

    logits: (V, T, K, C), keep: (V, T, K) bool -> (V, C) float32.
    """
    w = keep.to(logits.dtype) + alpha * (~keep).to(logits.dtype)
    return (logits * w[..., None]).sum(dim=(1, 2)) / w.sum(dim=(1, 2)).clamp_min(1e-12)[:, None]


def aggregate_probabilities(logits: torch.Tensor, keep: torch.Tensor, alpha: float = 0.0,
                            multilabel: bool = False) -> torch.Tensor:
    """Video-level scores that average per-frame *probabilities* (000 eq. 3, weights of eq. 10)
    and hand them back in logit space: log of the mean softmax (single-label), so that a
    softmax of the result is that mean, or the logit of the mean sigmoid (multi-label), so
    that a sigmoid of it is. Both are monotone in the mean, so rankings equal the mean's.

    logits: (V, T, K, C), keep: (V, T, K) bool -> (V, C) float32.
    """
    # float64 and a tiny clamp: a class whose probability underflows stays finite (no -inf
    # that a weighted fusion could turn into NaN).
    x = logits.double()
    log_mean = lambda p: torch.log(aggregate(p, keep, alpha).clamp_min(1e-300))  # noqa: E731
    if not multilabel:
        return log_mean(torch.softmax(x, dim=-1)).float()
    # logit p̄ = log p̄ − log(1 − p̄), with 1 − p̄ = mean σ(−x) computed directly (no cancellation)
    return (log_mean(torch.sigmoid(x)) - log_mean(torch.sigmoid(-x))).float()


# How per-frame logits of the kept cells become a video's class scores (GUIDE §4: one rule
# everywhere, named in the report). A selector names its rule in ``consensus``; evaluate
# computes every head baseline a method is compared with under the method's rule.
CONSENSUS_RULES = {"logit_mean": "mean of the per-frame logits, then softmax (TSN)",
                   "prob_mean": "mean of the per-frame probabilities (000 eq. 3)"}


def consensus_scores(rule: str, logits: torch.Tensor, keep: torch.Tensor, alpha: float = 0.0,
                     multilabel: bool = False) -> torch.Tensor:
    """(V, C) float32 video scores in logit space of the kept cells under consensus ``rule``
    (:data:`CONSENSUS_RULES`): :func:`aggregate` or :func:`aggregate_probabilities`.
    logits: (V, T, K, C); keep: (V, T, K) bool."""
    if rule == "logit_mean":
        return aggregate(logits, keep, alpha)
    if rule == "prob_mean":
        return aggregate_probabilities(logits, keep, alpha, multilabel)
    raise InputError(f"unknown consensus rule {rule!r}; available: {', '.join(CONSENSUS_RULES)}")


def consensus_of(selector) -> str:
    """The rule a selector's predictions follow: ``own:<name>`` for one that predicts with its
    own network (``own_classifier``), else its head consensus (:data:`CONSENSUS_RULES`)."""
    return f"own:{selector.name}" if selector.own_classifier else selector.consensus


class Selector:
    """Base of every selection method. Subclasses implement :meth:`score`.

    What a selector can do and needs is declared here, once, as class attributes with
    their defaults (a subclass sets its own; nobody probes for them): ``learned``,
    ``variable_m``, ``needs``, ``own_classifier``, ``needs_feature_maps``,
    ``uses_features``, ``needs_key``, and for agents the training abilities of
    :class:`Agent`."""

    name: ClassVar[str] = ""
    learned: ClassVar[bool] = False
    variable_m: ClassVar[bool] = False   # True when the method decides how many it keeps
    # What it must compute before it can choose, for the deployable cost (evaluate/compute.py):
    # "none" (chooses blind), "motion", "observer" (a cheap stream), "full" (everything)
    needs: ClassVar[str] = "full"
    own_classifier: ClassVar[bool] = False      # predicts with its own network, not the head
    needs_feature_maps: ClassVar[bool] = False  # reads <stream>/feature_maps (extract --feature-maps)
    uses_features: ClassVar[bool] = False       # a baseline that reads the features (evaluate loads them)
    needs_key: ClassVar[bool] = False           # reads the key mask: offered only with evaluate --truth
    # The consensus of :meth:`video_scores` (CONSENSUS_RULES); an instance may set its own
    # (evaluate builds the head baselines under each rule a compared method uses).
    consensus: str = "logit_mean"

    def score(self, states: States) -> torch.Tensor:
        """(V, T, K) float32 importance of every cell."""
        raise NotImplementedError

    def label(self) -> str:
        """The method's row label in reports: its name, plus what of its config makes it
        another method (dsn's ``dsn-f[1:3]``; a ``state`` option other than "both", 000's
        state ablation, ``as[state=features]``)."""
        state = getattr(getattr(self, "config", None), "state", "both")
        return self.name if state == "both" else f"{self.name}[state={state}]"

    def select(self, states: States, m: int | None, *, mode: str = "frame", alpha: float = 0.0) -> Selection:
        """Keep the top m positions by :meth:`score` and predict from them."""
        with torch.no_grad():
            return self.select_scored(states, self.score(states).float(), m, mode=mode, alpha=alpha)

    def select_scored(self, states: States, scores: torch.Tensor, m: int | None, *, mode: str = "frame",
                      alpha: float = 0.0) -> Selection:
        """:meth:`select` given this selector's ``scores`` (V, T, K) of ``states``, e.g. kept
        from an earlier budget (evaluate scores each block once for every m)."""
        with torch.no_grad():
            keep = top_m_mask(scores, m, mode)
            video_scores = self.video_scores(states, keep, alpha)
        per = keep.any(dim=2).sum(1) if mode == "frame" else keep.sum(dim=(1, 2))
        return Selection(scores, keep, video_scores, per.long(), mode)

    def video_scores(self, states: States, keep: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
        """(V, C) float32 class scores from the kept cells under the selector's ``consensus``
        (TSN's mean of logits by default; ``as`` averages probabilities, 000 eq. 3)."""
        return consensus_scores(self.consensus, states.logits, keep, alpha, states.multilabel)


class Agent(Selector):
    """A learned selector: a frozen ``Config`` dataclass, a torch module, a checkpoint.

    Subclasses set ``Config`` (a frozen dataclass whose defaults are the paper's settings)
    and implement ``build()``, ``score``, and for training only their step:
    ``make_optimizer(stage)`` and ``train_epoch(ctx, epoch)`` (the epoch loop, history,
    log, checkpoints and resume are the training template's, agents/training.py).
    """

    learned = True
    Config: ClassVar[type] = None
    # True when train_epoch reads its videos through States.batches (a mini-batch at a
    # time), so `framesel train --load stream` can leave the list's states in the store
    streams_training: ClassVar[bool] = False
    # True when N seeds can train in one batched pass (agents/batched_seeds.py: the agent gives
    # ``stack(agents)`` and ``train_epoch_together``): `framesel train --seeds N --together`
    trains_seeds_together: ClassVar[bool] = False
    # False for agents that never read the per-frame logits (they predict with their own
    # network from the features): evaluate then does not require the logits they were
    # trained beside (agents/train_stage.check_agent_matches)
    reads_logits: ClassVar[bool] = True

    # The paper's separately trained no-selection model of the same network, by registered
    # name (agents/papers.py): `framesel train` trains it too, evaluate pairs them. None when
    # the agent predicts with the head, whose baselines share its classifier already.
    partner: ClassVar[str | None] = None
    # Where this implementation departs from its paper, each naming the section (the report
    # lists them: agents.papers.departures_of).
    departures: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def partner_for(cls, config) -> str | None:
        """The partner of an agent of this class trained with ``config`` (:attr:`partner`)."""
        return cls.partner

    def __init__(self, config, *, num_classes: int, feature_dim: int, seed: int = 0):
        self.config = config
        self.num_classes, self.feature_dim, self.seed = num_classes, feature_dim, seed
        torch.manual_seed(seed)
        self.module: torch.nn.Module = self.build()
        self.store_identity: dict[str, Any] = {}
        self.history: list[dict] = []
        self.training_state: dict[str, Any] = {}   # optimizer, epoch, rng, extras: training.end_epoch

    def build(self) -> torch.nn.Module:
        raise NotImplementedError

    def trained_budget(self) -> int | None:
        """The budget m the agent was trained to select (``as``'s m, dsn's M sections), or
        None when training does not fix one; evaluate marks rows at other budgets."""
        return None

    def fit(self, train: States, *, device="cpu", log_path=None, checkpoint_path=None,
            progress=False, val: States | None = None, **inputs) -> list[dict]:
        """Train on ``train`` with the one training template (agents/training.py): one dict
        per epoch appended to ``self.history`` (and the JSONL at ``log_path``), a resumable
        checkpoint saved atomically at ``checkpoint_path`` every epoch and resumed from when
        it is there. ``inputs``: the extra states named in ``fit_inputs``. Returns the history."""
        from agents.training import fit

        return fit(self, train, device=device, log_path=log_path, checkpoint_path=checkpoint_path,
                   progress=progress, val=val, **inputs)

    # -- the training template's hooks (agents/training.py; ctx is its TrainContext) ------
    fit_inputs: ClassVar[tuple[str, ...]] = ()   # extra keyword States fit accepts

    def check_states(self, states: States, what: str) -> None:
        """InputError unless ``states`` (``what``: "training", "validation") hold a video and
        the (D, C) this agent was built for."""
        V, _, _, D, C = states.shape
        if V < 1:
            raise InputError(f"no {what} videos")
        if (D, C) != (self.feature_dim, self.num_classes):
            raise InputError(f"{what} states have (D, C) = ({D}, {C}) but {self.name} was built for "
                             f"({self.feature_dim}, {self.num_classes})")

    def stages(self) -> tuple[tuple[str, int], ...]:
        """(name, epochs) of each training stage, in order; one optimizer per stage."""
        return (("train", self.config.epochs),)

    def total_epochs(self) -> int:
        """Epochs a full run of this config trains: all stages added up."""
        return sum(epochs for _, epochs in self.stages())

    def make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        """The optimizer of ``stage`` over ``self.module``'s parameters (on its device)."""
        raise NotImplementedError

    def prepare(self, ctx) -> None:
        """Check the inputs, precompute what every epoch reads, register checkpointed
        objects in ``ctx.state``. Runs before a resume restores anything."""

    def start_fresh(self, ctx) -> None:
        """Once, before the first epoch of a run that does not resume."""

    def lr_at(self, epoch: int) -> float | None:
        """The learning rate of 0-based ``epoch``; None keeps the optimizer's own."""
        return None

    def train_epoch(self, ctx, epoch: int) -> dict:
        """One pass over ``ctx.train``; returns the epoch's metrics (floats, strings)."""
        raise NotImplementedError

    def validate(self, ctx, epoch: int) -> dict:
        """Metrics on ``ctx.val``: top-1 of the agent's own prediction over every position
        (single-label only)."""
        if ctx.val.multilabel:
            return {}
        scores = self.select(ctx.val, None).video_scores
        return {"val_top1": float((scores.argmax(1).cpu() == ctx.val.labels.cpu().long()).float().mean())}

    # -- checkpoints ------------------------------------------------------------------
    def checkpoint(self, **extra) -> dict:
        """The checkpoint as plain values and tensors (format: agents/checkpoint.py)."""
        from agents.checkpoint import FORMAT, to_plain
        from data import __version__
        return to_plain({
            "framesel_checkpoint": FORMAT, "agent": self.name, "config": dataclasses.asdict(self.config),
            "num_classes": self.num_classes, "feature_dim": self.feature_dim, "seed": self.seed,
            "store": self.store_identity, "history": self.history,
            "state_dict": dict(self.module.state_dict()),
            "versions": {"framesel": __version__, "torch": str(torch.__version__)},
            **self.training_state, **extra})

    def save(self, path, **extra) -> None:
        """Write the checkpoint atomically (a killed run never leaves half of one); a path
        that cannot be written is a StoreError naming it."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        data = io.BytesIO()
        torch.save(self.checkpoint(**extra), data)     # in memory: torch hides a failed write's errno
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data.getbuffer())
            tmp.replace(path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            cause = "disk full writing" if is_full(err) else "cannot write"
            raise StoreError(f"{cause} agent checkpoint {path}: {short_error(err)}; what was there before "
                             "is untouched") from None
