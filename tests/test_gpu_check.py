"""benchmarks/gpu_check.sh (issue 31): its --cpu mode runs every step here as CI would (a
clean clone, ../shared beside it, no wheelhouse, no prepared clips) and its gpu.json holds
every key, with two real stores that are equal; and the report's check can fail."""
import json
import os
import subprocess
import sys
from pathlib import Path

import importlib.util

import pytest

from conftest import shared_data

REPO = Path(__file__).resolve().parents[1]
# benchmarks/ is scripts, not an installed package: load the module from its file
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)
STEP_KEYS, TARGETS, check, targets = gpu_check.STEP_KEYS, gpu_check.TARGETS, gpu_check.check, gpu_check.targets


@pytest.mark.slow       # ~45 s on 2 idle cores, ~100 s under a load of 7
def test_cpu_mode_end_to_end(tmp_path):
    shared_data("fight", "classes.txt")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_DATA": str(tmp_path / "absent"),
           "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert check(report) == []
    steps = report["steps"]
    assert [s for s in steps if steps[s]["status"] != "ok"] in ([], ["predict"])
    cmp = steps["extract"]["compare"]
    assert cmp["real"] and cmp["identical"] and cmp["relative_l2"]["flow/features"] == 0.0
    assert steps["extract"]["e2e"]["videos_done"] == 1 and steps["tvl1"]["rows"][0]["epe_mean"] < 0.01
    assert len(steps["train"]["rows"]) == 3 and steps["train"]["rows"][0]["seconds"] > 0
    assert "targets (issue 31)" in (tmp_path / "out" / "summary.txt").read_text()
    assert not (tmp_path / "absent").exists()       # the CI path prepared its own clips in a scratch folder


def _report(**extract):
    steps = {name: {"status": "ok", **{k: [] for k in keys}} for name, keys in STEP_KEYS.items()}
    steps["extract"] = {"status": "ok", "e2e": {"device_busy": 0.9}, **extract}
    steps["tvl1"]["rows"] = [{"pairs_per_s": 320.0, "epe_mean": 0.008}]
    return {"device": "x", "mode": "cpu", "steps": steps, "targets": targets(steps)}


def test_check_and_targets():
    good = _report(compare={"real": True, "equal": True})
    assert check(good) == []
    t = good["targets"]
    assert set(t) == set(TARGETS) and t["tvl1_pairs_per_s"]["met"] and t["tvl1_mean_epe_px"]["met"]
    assert t["ucf101_tsn_hours"]["met"] is None and t["extract_device_busy"]["met"]
    assert "not real and equal" in " ".join(check(_report(compare={"real": False, "equal": True})))
    bad = _report(compare={"real": True, "equal": True})
    del bad["steps"]["tvl1"]["params"], bad["targets"]
    assert sorted(check(bad)) == ["missing key targets", "step tvl1: missing params"]
    bad = _report(compare={"real": True, "equal": True})
    bad["steps"]["train"] = {"status": "timeout"}
    assert check(bad) == ["step train: timeout "]


@pytest.mark.parametrize("script", ["gpu_check.sh", "wheelhouse.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)]).returncode == 0
