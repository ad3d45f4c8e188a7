"""benchmarks/untrimmed.py --quick: a handful of real composites end to end (issue 27)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_data

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "untrimmed.py"


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    fight = shared_data("fight")
    out = tmp_path / "quick"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--root", str(fight), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["seconds"]) >= {"compose", "extract", "head", "train as", "evaluate"}
    # no leakage: every segment of a test composite is a clip of the test list, and so for train
    truth = json.loads((out / "truth.json").read_text())
    for split in ("train", "test"):
        allowed = {ln.split()[0] for ln in (fight / f"{split}.txt").read_text().splitlines() if ln.strip()}
        used = {s["source"] for p, t in truth.items() if p.startswith(f"{split}/") for s in t["segments"]}
        assert used and used <= allowed
    result = json.loads((out / "report" / "results.json").read_text())
    rows = [r for r in result["rows"] if r["protocol"] == "accuracy_vs_m" and r["stream"] == "rgb"]
    methods = {r["method"] for r in rows}
    assert {"as", "uniform", "key_oracle", "cut", "motion", "oracle"} <= methods
    key_oracle = {r["m"]: r for r in rows if r["method"] == "key_oracle"}
    assert key_oracle[1]["key_precision"] == 1.0                      # one position: always inside a target
    assert key_oracle[5]["key_recall"] >= max(r["key_recall"] for r in rows if r["m"] == 5 and r["method"] != "key_oracle")
    assert all(r["vs_uniform_cluster_ci_lo"] is not None for r in rows if r["method"] == "as")
    meta = result["meta"]["truth"]["test"]
    assert 0.0 < meta["key_fraction"] < 0.5 and set(meta["head_auc"]) == {"rgb", "flow", "fused"}
    prov = result["meta"]["logits_provenance"]["rgb"]
    assert prov["labels"] == "per position" and prov["truth_sha256"]
    assert "Key positions (segment truth)" in (out / "report" / "report.md").read_text()
