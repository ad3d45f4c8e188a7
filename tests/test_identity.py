"""One identity per artefact (issue 25 items 2, 4, 5; issue 26 items 5, 6): features from
other weights, logits from another head and seeds from other lists are refused or kept
apart, naming both sides; every row names its consensus rule, and rows at a budget the
method did not train for are marked. Through the real CLI on real Zarr stores."""
import json

import numpy as np
import pytest

from data.identity import differences, features_identity, settings_identity
from data.store import open_store
from tests.test_checkpoints import cli, make_store, train

TORCH_THREADS = 1


def _weights(path, sha: str, file: str) -> None:
    """Record that the store's rgb features came from weights ``file`` with ``sha``."""
    with open_store(path, "a") as s:
        s.set_attrs({"backbone": {"rgb": {"gflops_per_frame": 0.4, "sha256": sha, "file": file}}})


def _rows(report):
    return json.loads((report / "results.json").read_text())["rows"]


def test_execution_settings_and_checkpoint_paths_are_not_identity():
    rec = {"frames": 25, "batch_size": 16, "checkpoints": [["rgb", "/a/x.pth"]],
           "flow": {"algorithm": "tvl1-torch", "threads": 2, "params": {"epsilon": 0.01, "device": "cuda",
                                                                        "batch_size": 64, "compile": True}}}
    other = {**rec, "batch_size": 4, "checkpoints": [["rgb", "/b/x.pth"]],
             "flow": {**rec["flow"], "threads": 1, "params": {**rec["flow"]["params"], "device": "cpu",
                                                               "batch_size": 8, "compile": False}}}
    assert settings_identity(rec) == settings_identity(other)
    other["flow"]["params"]["epsilon"] = 0.05
    assert differences(settings_identity(rec), settings_identity(other)) == ["flow.params.epsilon 0.01 vs 0.05"]
    a = {"settings": rec, "backbone": {"rgb": {"sha256": "a" * 64, "file": "x"}}}
    b = {"settings": rec, "backbone": {"rgb": {"sha256": "b" * 64, "file": "x"}}}
    assert differences(features_identity(a), features_identity(b)) == [
        f"backbone_sha256.rgb {'a' * 12}… vs {'b' * 12}…"]


def test_train_and_evaluate_refuse_a_store_from_other_weights(tmp_path):
    a, lst = make_store(tmp_path, "a.zarr")
    b, _ = make_store(tmp_path, "b.zarr")
    _weights(a, "a" * 64, "/weights/tsn_rgb_a.pth")
    _weights(b, "b" * 64, "/weights/tsn_rgb_b.pth")
    out = tmp_path / "as.pt"
    assert train(a, lst, out).exit_code == 0
    r = cli("evaluate", b, "--test", lst, "--agents", out, "--out", tmp_path / "rep", "--m", "2", "--quiet")
    assert r.exit_code == 1, r.output
    msg = r.output.strip()
    assert "\n" not in msg and "as.pt: agent as was trained on features that mean something else" in msg
    assert "/weights/tsn_rgb_a.pth" in msg and "/weights/tsn_rgb_b.pth" in msg
    assert f"backbone_sha256.rgb {'a' * 12}… vs {'b' * 12}…" in msg
    # resuming (extending) the checkpoint on the other store is refused too, naming the hashes
    r = train(b, lst, out, "as", ["epochs=2", "m=2", "hidden=4", "batch_size=8"])
    assert r.exit_code == 1 and f"backbone_sha256.rgb {'a' * 12}… vs {'b' * 12}…" in r.output, r.output
    # the same weights under another file name are the same features
    _weights(b, "a" * 64, "/elsewhere/renamed.pth")
    r = cli("evaluate", b, "--test", lst, "--agents", out, "--out", tmp_path / "rep", "--m", "2",
            "--baselines", "uniform", "--quiet")
    assert r.exit_code == 0, r.output


def test_evaluate_refuses_an_agent_trained_against_a_replaced_head(tmp_path):
    store, lst = make_store(tmp_path)
    assert cli("head", store, "--train", lst, "--epochs", "2", "--quiet").exit_code == 0
    first = open_store(store).logits_provenance()["rgb"]["head_sha256"]
    out = tmp_path / "as.pt"
    assert train(store, lst, out).exit_code == 0
    r = cli("head", store, "--train", lst, "--epochs", "3", "--quiet")        # a re-run replaces the logits
    assert r.exit_code == 0, r.output
    second = open_store(store).logits_provenance()["rgb"]["head_sha256"]
    assert first != second
    r = cli("evaluate", store, "--test", lst, "--agents", out, "--out", tmp_path / "rep", "--m", "2", "--quiet")
    assert r.exit_code == 1
    assert "trained against per-frame logits that" in r.output and "`framesel head` was re-run?" in r.output
    assert f"rgb.head_sha256 {first[:12]}… vs {second[:12]}…" in r.output, r.output


def test_seeds_trained_on_other_lists_are_kept_apart_with_a_note(tmp_path):
    store, lst = make_store(tmp_path)
    half = tmp_path / "half.txt"
    half.write_text("".join(lst.read_text().splitlines(keepends=True)[:16]))
    assert train(store, lst, tmp_path / "a0.pt", "as", None, "--seed", "0").exit_code == 0
    assert train(store, half, tmp_path / "a1.pt", "as", None, "--seed", "1").exit_code == 0
    r = cli("evaluate", store, "--test", lst, "--agents", tmp_path / "a0.pt", tmp_path / "a1.pt",
            "--out", tmp_path / "rep", "--m", "2", "--baselines", "uniform", "--quiet")
    assert r.exit_code == 0, r.output
    acc = [x for x in _rows(tmp_path / "rep") if x["protocol"] == "accuracy_vs_m" and x["learned"]]
    assert sorted({x["method"] for x in acc}) == ["as", "as#2"]
    assert all(x["seed"] != "mean" for x in acc)                  # no mean over the two
    note = next(x["note"] for x in acc if x["method"] == "as#2")
    assert note.startswith("not averaged with as: trained on train_list_sha256")


def test_every_row_names_its_consensus_and_as_is_compared_under_its_own(tmp_path):
    store, lst = make_store(tmp_path)
    out = tmp_path / "as.pt"
    assert train(store, lst, out).exit_code == 0                  # trained at m = 2 (TINY)
    r = cli("evaluate", store, "--test", lst, "--agents", out, "--out", tmp_path / "rep", "--m", "2,3",
            "--baselines", "uniform,oracle", "--quiet")
    assert r.exit_code == 0, r.output
    rows = [x for x in _rows(tmp_path / "rep") if x["protocol"] == "accuracy_vs_m"]
    assert all(x.get("consensus") for x in rows)
    by = {(x["method"], x["m"]): x for x in rows}
    assert by["as", 2]["consensus"] == by["as", 2]["head_consensus"] == "prob_mean"
    assert by["uniform", 2]["consensus"] == "logit_mean" and by["uniform@prob_mean", 2]["consensus"] == "prob_mean"
    # as's uniform and oracle are the head's under the probability mean, not the logit mean
    assert by["as", 2]["vs_uniform_top1"] == pytest.approx(by["uniform@prob_mean", 2]["top1"])
    assert by["as", 3]["vs_oracle_top1"] == pytest.approx(by["oracle@prob_mean", 3]["top1"])
    # budget marks: trained at m = 2, shown at m = 3 as such
    assert by["as", 2]["trained_m"] is None and by["as", 3]["trained_m"] == 2
    assert by["as", 3]["budget_note"].startswith("trained at m = 2")


def test_dsn_rows_that_keep_uniform_positions_say_so(tmp_path):
    store, lst = make_store(tmp_path)                              # T = 5
    out = tmp_path / "dsn.pt"
    assert train(store, lst, out, "dsn").exit_code == 0
    r = cli("evaluate", store, "--test", lst, "--agents", out, "--out", tmp_path / "rep", "--m", "1,3",
            "--baselines", "uniform", "--quiet")
    assert r.exit_code == 0, r.output
    rows = {x["m"]: x for x in _rows(tmp_path / "rep") if x["protocol"] == "accuracy_vs_m" and x["learned"]}
    # m = 3 of 5: one candidate per section (N = 5 // 3 = 1), the section centres = uniform
    assert rows[3]["equals_uniform"] is True and "= uniform" in rows[3]["budget_note"]
    assert rows[1]["equals_uniform"] is False
    assert np.isclose(rows[3]["top1"], rows[3]["vs_same_uniform_top1"])   # its own classifier on the same positions
