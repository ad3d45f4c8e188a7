"""evaluate --truth on a real store (planted, known key positions) and the per-position head."""
import json

import numpy as np
import pytest
import torch

from agents.head import HeadConfig, position_weights, train_head
from agents.synthetic import planted_states, write_planted_store
from data.errors import InputError
from data.store import open_store
from evaluate.protocols import ProtocolConfig
from evaluate.run import EvaluateConfig, pick_baselines, run_evaluate

TORCH_THREADS = 1


def _truth_of_store(store_path, rows, path):
    """One one-frame segment per position (frame_index = arange(T) in a planted store): a key
    position's segment is of the video's class, the others of 'background'; each segment's
    source one of 30 clips, so videos share clips."""
    st = planted_states(V=80, T=25, K=1, D=64, C=8, n_key=3, seed=0, with_maps=True, map_size=4)
    with open_store(store_path) as s:
        paths, classes = s.paths, s.attrs["classes"]
    truth = {}
    for v in rows:
        segs = [{"source": f"clips/c{(7 * v + t) % 30}.mp4",
                 "class": classes[int(st.labels[v])] if st.key[v, t] else "background", "start": t, "end": t + 1}
                for t in range(25)]
        truth[paths[v]] = {"num_frames": 25, "segments": segs}
    path.write_text(json.dumps(truth))
    return st


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    store, train, test = write_planted_store(root, train=40, test=40, T=25, n_key=3)
    st = _truth_of_store(store, range(40, 80), root / "truth.json")
    return root, store, test, st


def test_evaluate_with_truth(planted):
    root, store, test, st = planted
    cfg = EvaluateConfig(store=str(store), test_lists=(str(test),), out=str(root / "report"),
                         baselines=("uniform", "random", "max_response", "oracle", "key_oracle", "cut"),
                         protocol=ProtocolConfig(ms=(1, 3), protocols=("accuracy_vs_m",), bootstrap=300),
                         quiet=True, truth=str(root / "truth.json"))
    paths = run_evaluate(cfg)
    out = json.loads(paths["json"].read_text())
    rows = {(r["method"], r["m"]): r for r in out["rows"] if r["stream"] == "rgb"}
    key = st.key[40:].numpy()
    assert rows["key_oracle", 3]["key_precision"] == 1.0 and rows["key_oracle", 3]["key_recall"] == 1.0
    assert rows["key_oracle", 1]["key_recall"] == pytest.approx(1 / 3)
    chance = key.mean()
    assert out["meta"]["truth"]["test"]["key_fraction"] == pytest.approx(chance)
    assert abs(rows["uniform", 3]["key_precision"] - chance) < 0.1
    r = rows["key_oracle", 3]
    assert r["vs_uniform_cluster_ci_lo"] <= r["vs_uniform_diff"] <= r["vs_uniform_cluster_ci_hi"]
    assert r["vs_uniform_diff"] > 0.3                      # planted logits: the key positions hold the class
    meta = out["meta"]["truth"]["test"]
    assert meta["num_source_clips"] == 30 and meta["positives_with_key"] == 40
    assert 0.5 < meta["head_auc"]["rgb"] <= 1.0            # planted: the true class is strong at key positions
    md = paths["md"].read_text()
    assert "Key positions (segment truth)" in md and "key fraction" in md


class _WithMotion:
    """What pick_baselines asks of a store: whether it has a node."""
    path = "s.zarr"

    def has(self, name):
        return True


def test_key_oracle_only_with_truth():
    store = _WithMotion()
    assert "key_oracle" not in pick_baselines((), store, truth=False)
    assert "key_oracle" in pick_baselines((), store, truth=True) and "cut" in pick_baselines((), store, truth=False)
    with pytest.raises(InputError, match="--truth"):
        pick_baselines(("uniform", "key_oracle"), store, truth=False)


def test_truth_of_other_videos_is_refused(planted, tmp_path):
    root, store, test, _ = planted
    bad = json.loads((root / "truth.json").read_text())
    first = next(iter(bad))
    bad[first]["num_frames"] = 26
    bad[first]["segments"][-1]["end"] = 26
    (tmp_path / "t.json").write_text(json.dumps(bad))
    cfg = EvaluateConfig(store=str(store), test_lists=(str(test),), out=str(tmp_path / "r"), baselines=("uniform",),
                         protocol=ProtocolConfig(ms=(1,), protocols=("accuracy_vs_m",), bootstrap=50), quiet=True,
                         truth=str(tmp_path / "t.json"))
    with pytest.raises(InputError, match="26 frames there but 25 decoded"):
        run_evaluate(cfg)


def test_position_weights_by_hand():
    labels = np.array([[0, 0, 0, 1], [0, 0, 0, 0]])      # 7 of class 0, 1 of class 1, none of class 2
    w = position_weights(labels, 3)
    assert w.tolist() == pytest.approx([8 / 7 / 2, 8 / 1 / 2, 0.0])


def test_head_per_position_learns_each_positions_class():
    g = np.random.default_rng(0)
    V, T, K, D = 60, 10, 2, 8
    labels = (g.random((V, T)) < 0.2).astype(np.int64)             # 20 % of positions are class 1
    protos = g.normal(size=(2, D)).astype(np.float32)
    feats = protos[labels][:, :, None, :] + 0.5 * g.normal(size=(V, T, K, D)).astype(np.float32)
    head, prov = train_head(feats, labels, 2, HeadConfig(epochs=40, lr=1e-2, dropout=0.0), per_position=True)
    with torch.no_grad():
        pred = head(torch.from_numpy(feats)).mean(2).argmax(-1).numpy()
    assert (pred == labels).mean() > 0.95
    assert prov["labels"] == "per position" and prov["position_class_weights"][1] > prov["position_class_weights"][0]
    assert prov["final_train_accuracy"] > 0.9
    with pytest.raises(InputError, match="per-position labels"):
        train_head(feats, labels[:, :5], 2, HeadConfig(epochs=1), per_position=True)


def test_seed_means_average_the_key_columns():
    from evaluate.pairing import summarize_seeds

    rows = [{"split": "1", "protocol": "accuracy_vs_m", "method": "as", "stream": "rgb", "m": 3, "seed": s,
             "top1": 0.5, "key_precision": p, "key_recall": 0.5} for s, p in ((0, 0.2), (1, 0.4))]
    mean = [r for r in summarize_seeds(rows) if r["seed"] == "mean"][0]
    assert mean["key_precision"] == pytest.approx(0.3) and mean["key_precision_std"] == pytest.approx(0.1414, abs=1e-3)


def test_untrimmed_summary_reads_the_report(planted, tmp_path):
    """benchmarks/untrimmed_summary.py: the key oracle's cell as the report has it, and the
    markdown names every stream the report holds."""
    import importlib.util
    from pathlib import Path

    root, store, test, _ = planted
    run = tmp_path / "run"
    run_evaluate(EvaluateConfig(store=str(store), test_lists=(str(test),), out=str(run / "report"),
                                baselines=("uniform", "key_oracle", "cut"),
                                protocol=ProtocolConfig(ms=(1, 3), protocols=("accuracy_vs_m",), bootstrap=100),
                                quiet=True, truth=str(root / "truth.json")))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "untrimmed_summary.py"
    spec = importlib.util.spec_from_file_location("untrimmed_summary", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    s = mod.summarize(run)
    cells = {(c["method"], c["stream"], c["m"]): c for c in s["cells"]}
    assert cells["key_oracle", "rgb", 3]["key_precision"] == 1.0
    assert cells["uniform", "rgb", 1]["top1"] is not None and s["truth"]["test"]["key_fraction"] > 0
    assert "**rgb**" in mod.markdown(s) and "| key_oracle | 3 |" in mod.markdown(s)
