"""Metrics and paired statistics: scikit-learn / scipy agreement and the real HMDB51 scores."""

import math
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics as skm
from scipy import stats as sps

from data.errors import InputError
from evaluate.metrics import (average_precision_per_class, confusion_matrix, fuse_scores,
                              mean_average_precision, mean_class_accuracy, mean_std,
                              per_class_accuracy, softmax, top_k_accuracy, topk_hits)
from evaluate.stats import bootstrap_ci, mcnemar

HMDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "scores" / "hmdb51"
STREAMS = ("iframe", "flow", "residual", "mv")


def random_case(seed, n=300, c=7, absent=()):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, c)).astype(np.float32)
    labels = rng.choice([i for i in range(c) if i not in absent], size=n)
    scores[np.arange(n), labels] += 0.8  # better than chance, so errors are not symmetric
    return scores, labels


# ----------------------------------------------------------------------------- scikit-learn agreement

@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to", "ignore:y_pred contains classes")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracies_agree_with_sklearn(seed):
    scores, labels = random_case(seed, absent=(3,) if seed == 2 else ())
    c = scores.shape[1]
    for k in (1, 2, 5, c):
        want = skm.top_k_accuracy_score(labels, scores, k=k, labels=np.arange(c))
        assert top_k_accuracy(scores, labels, k) == pytest.approx(want, abs=1e-12)
    pred = scores.argmax(1)
    assert mean_class_accuracy(scores, labels) == pytest.approx(skm.balanced_accuracy_score(labels, pred))
    assert (confusion_matrix(scores, labels, c) == skm.confusion_matrix(labels, pred, labels=np.arange(c))).all()
    assert confusion_matrix(scores, labels, c).dtype == np.int64
    pc = per_class_accuracy(scores, labels, c)
    assert pc.shape == (c,)
    if seed == 2:
        assert np.isnan(pc[3]) and not np.isnan(np.delete(pc, 3)).any()
    rec = skm.recall_score(labels, pred, labels=np.unique(labels), average=None)
    np.testing.assert_allclose(pc[~np.isnan(pc)], rec)


@pytest.mark.parametrize("seed", [0, 1])
def test_map_agrees_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, c = 200, 6
    targets = (rng.random((n, c)) < 0.3).astype(np.uint8)
    scores = rng.normal(size=(n, c)) + targets
    if seed == 1:
        scores = np.round(scores, 1)  # many ties: one threshold per distinct score
        targets[:, 2] = 0  # a class without positives is left out of the mean
    per = [skm.average_precision_score(targets[:, j], scores[:, j]) if targets[:, j].any() else np.nan
           for j in range(c)]
    np.testing.assert_allclose(average_precision_per_class(scores, targets), per, rtol=1e-12)
    assert mean_average_precision(scores, targets) == pytest.approx(np.nanmean(per), rel=1e-12)
    if seed == 0:
        macro = skm.average_precision_score(targets, scores, average="macro")
        assert mean_average_precision(scores, targets.astype(bool)) == pytest.approx(macro, rel=1e-12)


def test_ties_score_chance_not_zero_or_one():
    scores = np.zeros((40, 4))
    labels = np.arange(40) % 4
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(0.25)
    assert top_k_accuracy(scores, labels, 3) == pytest.approx(0.75)
    # a two-way tie for first between label and another class: half a hit at k=1, one at k=2
    s = np.array([[2.0, 2.0, 1.0], [3.0, 1.0, 1.0]])
    assert topk_hits(s, [1, 2], 1).tolist() == [0.5, 0.0]
    assert topk_hits(s, [1, 2], 2).tolist() == [1.0, 0.5]
    assert top_k_accuracy(s, [0, 0], 1) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- input checks

@pytest.mark.parametrize("call, msg", [
    (lambda s, y: top_k_accuracy(s, y, k=6), r"k must be an integer in \[1, 5\]"),
    (lambda s, y: top_k_accuracy(s, y, k=0), r"k must be an integer"),
    (lambda s, y: top_k_accuracy(s[:, :, None], y), r"\(N, C\) array"),
    (lambda s, y: top_k_accuracy(s, y[:-1]), r"labels must have shape \(10,\)"),
    (lambda s, y: top_k_accuracy(s, y + 5), r"labels must lie in \[0, 4\]"),
    (lambda s, y: top_k_accuracy(s, y - 1), r"labels must lie in \[0, 4\]"),
    (lambda s, y: top_k_accuracy(s, y.astype(float)), r"integer class indices"),
    (lambda s, y: top_k_accuracy(np.where(s > 1, np.nan, s), y), r"NaN or infinite"),
    (lambda s, y: top_k_accuracy(s[:0], y[:0]), r"non-empty"),
    (lambda s, y: confusion_matrix(s, y, 4), r"num_classes=4 but scores have 5"),
    (lambda s, y: per_class_accuracy(s, y, 6), r"num_classes=6"),
    (lambda s, y: mean_average_precision(s, np.zeros_like(s)), r"no class has a positive"),
    (lambda s, y: mean_average_precision(s, np.full_like(s, 2)), r"0/1"),
    (lambda s, y: mean_average_precision(s, np.zeros((3, 5))), r"targets must have"),
    (lambda s, y: mean_average_precision(s.astype(str), np.zeros((3, 5))), r"numeric"),
])
def test_metric_input_errors(call, msg):
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=(10, 5)), rng.integers(0, 5, 10)
    with pytest.raises(InputError, match=msg):
        call(s, y)


def test_fusion_checks_and_weight_normalisation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    f1 = fuse_scores({"rgb": a, "flow": b}, {"rgb": 1, "flow": 1.5})
    f2 = fuse_scores({"rgb": a, "flow": b}, {"rgb": 0.4, "flow": 0.6})
    np.testing.assert_allclose(f1, f2)
    np.testing.assert_allclose(f1, 0.4 * a + 0.6 * b)
    p = fuse_scores({"rgb": a, "flow": b}, {"rgb": 1, "flow": 2}, before_softmax=False)
    np.testing.assert_allclose(p, softmax(a) / 3 + 2 * softmax(b) / 3)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(softmax(np.array([[1000.0, 1000.0]])), [[0.5, 0.5]])  # no overflow
    with pytest.raises(InputError, match="must name the same streams"):
        fuse_scores({"rgb": a, "flow": b}, {"rgb": 1})
    with pytest.raises(InputError, match="non-negative"):
        fuse_scores({"rgb": a}, {"rgb": -1})
    with pytest.raises(InputError, match="one shape"):
        fuse_scores({"rgb": a, "flow": b[:, :3]}, {"rgb": 1, "flow": 1})
    with pytest.raises(InputError, match="stream 'flow'"):
        fuse_scores({"rgb": a, "flow": b * np.nan}, {"rgb": 1, "flow": 1})
    with pytest.raises(InputError, match="no streams"):
        fuse_scores({}, {})


def test_mean_std():
    assert mean_std([0.5, 0.6, 0.7]) == pytest.approx((0.6, 0.1))  # ddof=1
    assert mean_std([0.5, 0.6, 0.7], ddof=0)[1] == pytest.approx(np.std([0.5, 0.6, 0.7]))
    m, s = mean_std([0.4])
    assert m == 0.4 and math.isnan(s)
    with pytest.raises(InputError):
        mean_std([])
    with pytest.raises(InputError):
        mean_std([0.1, float("nan")])


# ----------------------------------------------------------------------------- real HMDB51 scores

def load_split(k):
    if not HMDB.exists():
        pytest.skip(f"real scores {HMDB} are absent (../shared/data is not part of a fresh clone)")
    out = {}
    for s in STREAMS:
        with np.load(HMDB / f"{s}_split{k}.npz") as z:
            out[s] = (z["scores"], z["labels"])
    labels = out["iframe"][1]
    assert all((lab == labels).all() for _, lab in out.values())  # one video order for all streams
    return {s: sc for s, (sc, _) in out.items()}, labels


def test_hmdb51_split1_single_stream_top1():
    scores, labels = load_split(1)
    assert scores["iframe"].shape == (1530, 51)
    want = {"iframe": 53.92, "flow": 49.61, "residual": 43.92, "mv": 38.04}
    for s, pct in want.items():
        assert 100 * top_k_accuracy(scores[s], labels) == pytest.approx(pct, abs=0.005)
        assert top_k_accuracy(scores[s], labels) == pytest.approx(
            skm.top_k_accuracy_score(labels, scores[s], k=1, labels=np.arange(51)))
        assert top_k_accuracy(scores[s], labels, 5) == pytest.approx(
            skm.top_k_accuracy_score(labels, scores[s], k=5, labels=np.arange(51)))
    # the test split is balanced (30 videos a class), so mean-class equals top-1 here
    assert (np.bincount(labels) == 30).all()
    assert mean_class_accuracy(scores["iframe"], labels) == pytest.approx(top_k_accuracy(scores["iframe"], labels))
    assert 100 * top_k_accuracy(scores["iframe"], labels, 5) == pytest.approx(83.59, abs=0.005)


def test_hmdb51_two_stream_fusion_beats_each_stream():
    scores, labels = load_split(1)
    two = {"iframe": scores["iframe"], "flow": scores["flow"]}
    fused = fuse_scores(two, {"iframe": 1.0, "flow": 1.5})
    acc = top_k_accuracy(fused, labels)
    assert 100 * acc == pytest.approx(64.25, abs=0.005)  # 983 / 1530
    assert acc > top_k_accuracy(scores["iframe"], labels) + 0.05
    assert acc > top_k_accuracy(scores["flow"], labels) + 0.05
    probs = fuse_scores(two, {"iframe": 1.0, "flow": 1.5}, before_softmax=False)
    assert 100 * top_k_accuracy(probs, labels) == pytest.approx(62.09, abs=0.005)


def test_hmdb51_mean_std_over_three_splits():
    per_split = {s: [] for s in (*STREAMS, "fused")}
    for k in (1, 2, 3):
        scores, labels = load_split(k)
        for s in STREAMS:
            per_split[s].append(top_k_accuracy(scores[s], labels))
        fused = fuse_scores({"iframe": scores["iframe"], "flow": scores["flow"]}, {"iframe": 1, "flow": 1.5})
        per_split["fused"].append(top_k_accuracy(fused, labels))
    got = {s: tuple(round(100 * x, 2) for x in mean_std(v)) for s, v in per_split.items()}
    assert got == {"iframe": (51.72, 1.91), "flow": (52.09, 2.95), "residual": (43.46, 1.09),
                   "mv": (39.54, 1.37), "fused": (63.46, 1.25)}
    assert all(f > max(per_split["iframe"][i], per_split["flow"][i]) for i, f in enumerate(per_split["fused"]))


def test_hmdb51_mcnemar_and_bootstrap_iframe_vs_flow():
    scores, labels = load_split(1)
    a = scores["iframe"].argmax(1) == labels
    b = scores["flow"].argmax(1) == labels
    stat, p = mcnemar(a, b)
    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    assert n01 + n10 >= 25
    assert stat == pytest.approx((abs(n01 - n10) - 1) ** 2 / (n01 + n10))
    assert p == pytest.approx(sps.chi2.sf(stat, 1), rel=1e-9)
    assert p == pytest.approx(0.00807, abs=5e-5)
    diff, lo, hi = bootstrap_ci(a, b)
    assert diff == pytest.approx(a.mean() - b.mean()) and lo < diff < hi and lo > 0


# ----------------------------------------------------------------------------- paired statistics

def paired(b, c, both=10, neither=5):
    """Correctness arrays with b videos only A gets right and c only B gets right."""
    a = [1] * b + [0] * c + [1] * both + [0] * neither
    bb = [0] * b + [1] * c + [1] * both + [0] * neither
    return np.array(a, bool), np.array(bb, bool)


@pytest.mark.parametrize("b, c", [(0, 0), (3, 0), (7, 2), (12, 12), (10, 14), (1, 23)])
def test_mcnemar_exact_matches_scipy_binomtest(b, c):
    stat, p = mcnemar(*paired(b, c))
    if b + c == 0:
        assert (stat, p) == (0.0, 1.0)
        return
    assert stat == min(b, c)
    assert p == pytest.approx(sps.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)


@pytest.mark.parametrize("b, c", [(20, 5), (13, 12), (30, 30), (100, 70)])
def test_mcnemar_chi2_matches_scipy(b, c):
    stat, p = mcnemar(*paired(b, c))
    want = max(0, abs(b - c) - 1) ** 2 / (b + c)
    assert stat == pytest.approx(want)
    assert p == pytest.approx(sps.chi2.sf(want, 1), rel=1e-12)
    # hand-checked: (|20 - 5| - 1)^2 / 25 = 7.84, p = 0.00511
    if (b, c) == (20, 5):
        assert stat == pytest.approx(7.84) and p == pytest.approx(0.005110, abs=1e-6)
    if b == c:
        assert (stat, p) == (0.0, 1.0)


def test_bootstrap_matches_index_resampling_and_covers_truth():
    rng = np.random.default_rng(1)
    a, b = rng.random(500) < 0.7, rng.random(500) < 0.6
    diff, lo, hi = bootstrap_ci(a, b, n=4000, seed=3)
    # the plain index bootstrap gives the same interval up to Monte-Carlo noise
    idx = rng.integers(0, 500, size=(4000, 500))
    naive = np.quantile(a[idx].mean(1) - b[idx].mean(1), [0.025, 0.975])
    assert abs(lo - naive[0]) < 0.01 and abs(hi - naive[1]) < 0.01
    assert bootstrap_ci(a, b, n=4000, seed=3) == (diff, lo, hi)  # seeded: reproducible
    # coverage on synthetic data with a known true difference of 0.1
    covered = 0
    for rep in range(200):
        r = np.random.default_rng(100 + rep)
        _, lo, hi = bootstrap_ci(r.random(400) < 0.7, r.random(400) < 0.6, n=2000, seed=rep)
        covered += lo <= 0.1 <= hi
    assert 0.90 <= covered / 200 <= 0.99


def test_stats_input_errors():
    a, b = paired(3, 4)
    with pytest.raises(InputError, match="one length"):
        mcnemar(a, b[:-1])
    with pytest.raises(InputError, match="boolean"):
        mcnemar(a.astype(int) * 2, b)
    with pytest.raises(InputError, match="non-empty"):
        bootstrap_ci([], [])
    with pytest.raises(InputError, match="alpha"):
        bootstrap_ci(a, b, alpha=1.5)
    with pytest.raises(InputError, match="positive integer"):
        bootstrap_ci(a, b, n=0)
