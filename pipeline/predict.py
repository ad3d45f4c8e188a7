"""``framesel predict``: classify new videos computing the expensive streams only where a
selector keeps positions (issue 28; GUIDE §5 "savings that exist only on paper").

Per video (:meth:`Predictor.video`):

1. **decode** (:func:`extract.prepare.prepare_video`): every frame is decoded (the TSN
   positions need the true count n), only those the T positions and their flow stacks use are kept;
2. **cheap pass** (:func:`extract.partial.cheap_pass`): the observed stream's backbone on the
   centre crop of all T positions, the store's head on those features. The observed stream is
   the agent's (``--stream rgb``), or its observer (a DSN trained with ``--observer rgb``), or
   rgb for a baseline;
3. **agent**: the selector keeps m positions (:func:`evaluate.select_classify.kept_positions`);
4. **expensive pass** (:func:`extract.partial.expensive_pass`): TV-L1 (the store's flow) on the
   kept stacks' pairs only, the flow backbone there, and the observed stream's other crops;
5. **class**: every stream classified at the kept positions, TSN-fused
   (:func:`evaluate.select_classify.classify_kept`), the fused argmax and its probability.

Once those videos are extracted into a store, ``framesel evaluate``'s ``select_classify`` rows
give the same positions and classes (scores within float16 rounding): tests/test_predict.py.
The store supplies the settings, backbone weights (sha256-checked, data/identity.py),
classes and heads; nothing is written into it. Refused: agents that read both streams at every
position (two-stream rtsae), agents that observe flow (the cheap pass would be the full flow
pass), the ``oracle`` (needs the label) and ``motion`` (needs flow everywhere) baselines.
"""
from __future__ import annotations

import dataclasses
import logging
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agents.base import States, load_agent, selector_class, selector_names
from agents.head import apply_head, stored_head
from agents.train_stage import check_agent_matches
from data.errors import InputError, StoreError, UnknownNameError, VideoError
from data.identity import differences, features_identity
from data.store import open_store
from evaluate.methods import Method, agent_label, baseline_method
from evaluate.select_classify import classify_kept, decide, kept_positions
from extract.partial import assemble, centre_crop, cheap_pass, expensive_pass, settings_from_record
from extract.schedule import safely
from extract.prepare import PrepareSettings, prepare_video
from extract.video import EXTRACTED_STREAMS, Models

log = logging.getLogger(__name__)

REFUSED_BASELINES = {"oracle": "it reads the video's label", "motion": "it reads flow at every position"}
STAGES = ("decode", "cheap", "agent", "flow", "backbone")     # the seconds' split of each video


class Predictor:
    """What a predict run loads once: the store's settings, classes and heads, the backbones
    (checked against the store's sha256), and the selection method. ``agent``: a checkpoint
    path or a registered baseline name."""

    def __init__(self, store_path: str, agent: str, m: int, device: str = "cpu"):
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise InputError(f"--m must be a positive integer, got {m!r}")
        with open_store(store_path) as store:
            attrs = store.attrs
            self.T, self.K = int(attrs["T"]), int(attrs["crops"])
            if m > self.T:
                raise InputError(f"--m {m}: more than the store's T = {self.T} positions per video")
            self.m, self.classes = m, list(attrs.get("classes") or [])
            self.multilabel = bool(attrs.get("multilabel"))
            self.streams = list(store.streams)
            self.method, self.stream, self.observed = self._method(store, agent)   # refusals first: no models built
            self.store_identity = store.identity()
            self.heads = {s: stored_head(store, s) for s in self.streams}
            recorded = settings_from_record(attrs.get("settings"))
            self.models = Models(recorded, device, len(self.classes))
            _check_same_features(store, recorded, self.models)
            self.settings = dataclasses.replace(recorded, thumbnail_size=None)     # predict keeps none
        self.centre = centre_crop(self.K, self.settings, self.models.backbone(self.observed).spec.input_size)
        self.expensive = tuple(s for s in self.streams if s != self.observed) + ((self.observed,) if self.K > 1 else ())

    def _method(self, store, agent: str) -> tuple[Method, str, str]:
        """(method, the stream it selects on, the stream its cheap pass computes)."""
        if agent in selector_names(learned=False):
            if agent in REFUSED_BASELINES:
                raise InputError(f"--agent {agent}: predict cannot run it ({REFUSED_BASELINES[agent]})")
            observed = "rgb" if "rgb" in self.streams else self.streams[0]
            return baseline_method(agent, self.streams), observed, observed
        try:
            selector_class(agent)
            raise InputError(f"--agent {agent} is an agent name: give its trained checkpoint (.pt)")
        except UnknownNameError:
            pass
        sel = load_agent(agent)
        try:
            check_agent_matches(sel, store)
        except InputError as err:
            raise InputError(f"{agent}: {err}") from None
        ident = sel.store_identity or {}
        stream, observer = ident.get("stream") or self.streams[0], ident.get("observer")
        if getattr(sel.config, "two_stream", False):
            raise InputError(f"{agent}: a two-stream {sel.name} reads both streams at every position; "
                             "predict has nothing to skip")
        observed = observer or stream
        if observed not in EXTRACTED_STREAMS or observed == "flow":
            raise InputError(f"{agent}: it observes stream {observed!r} at every position; predict's cheap pass "
                             "computes rgb (train the agent with --stream rgb, or a dsn with --observer rgb)")
        method = Method(agent_label(sel), {stream: sel}, True, sel.variable_m, seed=getattr(sel, "seed", None))
        return method, stream, observed

    def video(self, path: str) -> dict:
        """One video's prediction: path, predicted, score, kept_frames (decoded indices),
        seconds, error "" and its detail (positions, flow fields, seconds per stage). Raises
        VideoError for a video that cannot be used."""
        t0, secs = time.perf_counter(), dict.fromkeys(STAGES, 0.0)
        prepared = prepare_video(path, PrepareSettings.of(self.settings))
        secs["decode"] = prepared.seconds
        t1 = time.perf_counter()
        cheap = cheap_pass(prepared, self.settings, self.models, self.observed).streams[self.observed]
        obs = _with_logits(cheap, self.heads[self.observed])
        secs["cheap"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        kept = kept_positions(self.method.selectors[self.stream], self._selection_states(obs), self.m)
        positions = np.flatnonzero(kept[0].numpy())
        secs["agent"] = time.perf_counter() - t2
        result = expensive_pass(prepared, positions, self.settings, self.models, self.expensive)
        stages = dict(zip(_stages(self.settings, self.expensive), result.cost.seconds.tolist()))
        secs["flow"] = stages.get("flow", 0.0) + stages.get("flow_cost", 0.0)
        secs["backbone"] = sum(v for k, v in stages.items() if k.startswith("backbone:"))
        t3 = time.perf_counter()
        states = self._classify_states(cheap, result.streams, positions)
        fused, _ = classify_kept(self.method, states, kept)
        pred, score = decide(fused, self.multilabel)
        secs["agent"] += time.perf_counter() - t3          # heads and fusion: the light stage
        name = self.classes[int(pred[0])] if self.classes else str(int(pred[0]))
        return {"path": path, "predicted": name, "score": float(score[0]),
                "kept_frames": " ".join(str(int(f)) for f in prepared.frame_index[positions]),
                "seconds": time.perf_counter() - t0, "error": "",
                "positions": positions.tolist(), "flow_fields": int(result.cost.flow_fields),
                "stages": {k: round(v, 4) for k, v in secs.items()}}

    def _selection_states(self, obs: dict) -> States:
        """(1, T, 1, ·) states the selector reads: the observed stream's, or (an observer) zeros
        for its own stream's (its score reads only the observer) and the observer's features."""
        logits = torch.from_numpy(obs["logits"][None])
        feats = torch.from_numpy(obs["features"][None].astype(np.float32))
        maps = obs.get("feature_maps")
        maps = None if maps is None else torch.from_numpy(maps[None].astype(np.float32))
        common = {"labels": torch.zeros(1, dtype=torch.int64), "motion": torch.zeros(1, self.T),
                  "multilabel": self.multilabel}
        if self.stream == self.observed:
            return States(features=feats, logits=logits, feature_maps=maps, **common)
        D = self.models.runners[self.stream].backbone.feature_dim
        return States(features=torch.zeros(1, self.T, 1, D), logits=torch.zeros_like(logits), observer=feats, **common)

    def _classify_states(self, cheap: dict, rows: dict, positions: np.ndarray) -> dict:
        """stream -> (1, T, K, ·) States: the kept positions' rows of every stream (the cheap
        pass's centre crop elsewhere for the observed stream, zeros for the rest), logits by
        the store's heads; the method's stream carries its observer."""
        out = {}
        for s in self.streams:
            parts = {}
            for key in ("features", "feature_maps"):
                source = rows[s].get(key) if s in rows else cheap.get(key)
                if source is None:
                    continue
                kept = source if s in rows else source[positions]
                centre = cheap.get(key) if s == self.observed else None
                parts[key] = torch.from_numpy(assemble(self.T, self.K, positions, kept, centre, self.centre)[None]
                                              .astype(np.float32))
            logits = torch.from_numpy(apply_head(self.heads[s], parts["features"].numpy().astype(np.float16)))
            out[s] = States(features=parts["features"], logits=logits, feature_maps=parts.get("feature_maps"),
                            labels=torch.zeros(1, dtype=torch.int64), motion=torch.zeros(1, self.T),
                            multilabel=self.multilabel)
        if self.stream != self.observed:
            out[self.stream] = dataclasses.replace(out[self.stream], observer=out[self.observed].features)
        return out


def _with_logits(rows: dict, head) -> dict:
    """The cheap pass's rows of one stream with the head's (T, 1, C) logits added."""
    return {**rows, "logits": apply_head(head, rows["features"][None])[0]}


def _stages(settings, streams) -> tuple[str, ...]:
    """The cost stages of an expensive pass over ``streams`` (extract.device.cost_stages)."""
    from extract.device import cost_stages

    flow = settings.flow if "flow" in streams else None
    return cost_stages(dataclasses.replace(settings, streams=tuple(streams), flow=flow))


def _check_same_features(store, settings, models) -> None:
    """The backbones built from the store's settings must be the weights its features came
    from (sha256) and the settings must round-trip to the recorded identity."""
    describe = models.describe()
    ours = {**store.attrs, "settings": settings.record(), "backbone": describe}
    diff = differences(features_identity(store.attrs), features_identity(ours))
    if diff:
        raise StoreError(f"{store.path}: the backbones and settings predict rebuilt differ from the ones its "
                         f"features came from ({'; '.join(diff)}); run predict where the same weights are")


@dataclass(frozen=True)
class PredictConfig:
    store: str
    agent: str                    # a checkpoint, or a baseline name (uniform, max_response, ...)
    videos: str                   # a video list (labels, when it has them, give the accuracy)
    out: str                      # PRED.csv (or JSON lines with as_json)
    m: int
    root: str | None = None
    as_json: bool = False
    device: str = "cpu"
    quiet: bool = False
    command: str = ""


FIELDS = ("path", "predicted", "score", "kept_frames", "seconds", "error")


@dataclass
class PredictSummary:
    out: str
    rows: list
    seconds: float = 0.0
    accuracy: float | None = None        # top-1 over the labelled videos that did not fail

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r["error"])

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def text(self) -> str:
        acc = f", top-1 {100 * self.accuracy:.1f} %" if self.accuracy is not None else ""
        lines = [f"{self.out}: {len(self.rows) - self.failed}/{len(self.rows)} videos predicted, "
                 f"{self.failed} failed, {self.seconds:.1f} s{acc}"]
        return "\n".join(lines + [f"  FAILED {r['path']}: {r['error']}" for r in self.rows if r["error"]])


def run_predict(cfg: PredictConfig) -> PredictSummary:
    """Predict every video of ``cfg.videos`` and write ``cfg.out``; a video that fails gets
    its error in its row and the rest go on (``summary.ok`` is False)."""
    from tqdm import tqdm

    from data.lists import read_list
    from data.progress import show_progress

    videos = read_list(cfg.videos, root=cfg.root, require_exist=False)
    predictor = Predictor(cfg.store, cfg.agent, cfg.m, cfg.device)
    root, rows, t0 = Path(cfg.root or "."), [], time.perf_counter()
    with _Writer(cfg.out, cfg.as_json) as writer:
        for rel in tqdm(videos.paths, unit="video", desc="predict", disable=not show_progress(cfg.quiet)):
            outcome = safely(predictor.video, str(root / rel))      # a VideoError names the file and cause
            row = {"seconds": 0.0, "error": str(outcome)} if isinstance(outcome, VideoError) else outcome
            row["path"] = rel
            writer.write(row)
            rows.append(row)
    summary = PredictSummary(cfg.out, rows, time.perf_counter() - t0, _accuracy(rows, videos, predictor.classes))
    _write_meta(cfg, predictor, videos, summary)
    return summary


def _write_meta(cfg: PredictConfig, predictor: Predictor, videos, summary: PredictSummary) -> None:
    """``OUT.meta.json`` beside the predictions: the command, the store's identity, the agent
    (its checkpoint's sha256) or baseline, m, the settings, the list's sha256, versions."""
    import hashlib
    import platform
    from datetime import datetime, timezone

    import cv2

    from data import __version__

    agent = {"baseline": cfg.agent} if not predictor.method.learned else {
        "checkpoint": cfg.agent, "sha256": hashlib.sha256(Path(cfg.agent).read_bytes()).hexdigest(),
        "label": predictor.method.label, "seed": predictor.method.seed}
    meta = {"command": cfg.command, "store": str(cfg.store), "store_identity": predictor.store_identity,
            "agent": agent, "m": cfg.m, "observed_stream": predictor.observed, "selection_stream": predictor.stream,
            "expensive_streams": list(predictor.expensive), "settings": predictor.settings.record(),
            "videos": str(cfg.videos), "videos_sha256": videos.sha256, "root": cfg.root, "device": cfg.device,
            "failed": summary.failed, "seconds": summary.seconds, "accuracy": summary.accuracy,
            "versions": {"framesel": __version__, "torch": torch.__version__, "opencv": cv2.__version__,
                         "python": platform.python_version()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = Path(f"{cfg.out}.meta.json")
    try:
        path.write_text(json.dumps(meta, indent=1, default=str))
    except OSError as err:
        raise StoreError(f"cannot write {path}: {err.strerror or err}") from None



def _accuracy(rows: list, videos, classes: list) -> float | None:
    """Top-1 over the videos whose list gives one label (not multi-label) and that did not fail."""
    if videos.multilabel or not len(videos.labels):
        return None
    hits = [classes.index(r["predicted"]) == int(y) if classes else r["predicted"] == str(int(y))
            for r, y in zip(rows, videos.labels) if not r["error"] and int(y) >= 0]
    return float(np.mean(hits)) if hits else None


class _Writer:
    """PRED.csv (:data:`FIELDS`) or JSON lines (the same fields and the detail: positions,
    flow fields, seconds per stage), a row written and flushed as each video ends."""

    def __init__(self, path, as_json: bool):
        self.path, self.as_json = Path(path), as_json

    def __enter__(self):
        import csv

        try:
            self.fh = open(self.path, "w", newline="", encoding="utf-8")
        except OSError as err:
            raise StoreError(f"cannot write --out {self.path}: {err.strerror or err}") from None
        if not self.as_json:
            self.csv = csv.DictWriter(self.fh, fieldnames=FIELDS, extrasaction="ignore")
            self.csv.writeheader()
        return self

    def write(self, row: dict) -> None:
        row = {**{k: "" for k in FIELDS}, **row, "seconds": round(float(row.get("seconds") or 0.0), 3)}
        if self.as_json:
            self.fh.write(json.dumps(row, sort_keys=False) + "\n")
        else:
            self.csv.writerow(row)
        self.fh.flush()

    def __exit__(self, *exc):
        self.fh.close()


__all__ = ["FIELDS", "PredictConfig", "PredictSummary", "Predictor", "REFUSED_BASELINES", "STAGES", "run_predict"]
