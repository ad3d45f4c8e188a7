"""A researcher's own flow algorithm and agent, each one file outside framesel's packages
(tests/plugins/), named in FRAMESEL_PLUGINS (data/plugins.py): the flow is an `extract --flow`
choice and the report prices it from its registry entry; the agent trains, is evaluated and
keeps the agent contract (tests/test_agent_contract.py run over every registered agent).

Each case runs in a fresh interpreter: the plugins register into that process only, so this
process's registries stay the built-in ones."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, cli_env

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FLOW, AGENT = HERE / "plugins" / "dummy_flow.py", HERE / "plugins" / "dummy_agent.py"


def _framesel(*args, plugins=(FLOW, AGENT), check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=REPO, env=cli_env(*plugins),
                       capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_the_plugin_flow_and_agent_run_extract_to_report(tmp_path):
    from data.demo import DemoConfig, make_demo_dataset

    help_text = _framesel("extract", "--help").stdout
    assert "framediff" in help_text
    assert "dummy_attend (agent)" in _framesel("agents").stdout      # the registry's record of the plugin
    assert "framediff" not in _framesel("extract", "--help", plugins=()).stdout
    data = tmp_path / "data"
    make_demo_dataset(data, DemoConfig(videos_per_class=3, test_per_class=1, frames=16))
    (data / "all.txt").write_text((data / "train.txt").read_text() + (data / "test.txt").read_text())
    store = tmp_path / "s.zarr"
    _framesel("extract", data / "all.txt", "--root", data, "--classes", data / "classes.txt", "--out", store, *TINY,
              "--frames", "4", "--flow-stack", "2", "--crops", "1", "--flow", "framediff", "--flow-param", "gain=0.25",
              "--quiet")
    _framesel("head", store, "--train", data / "train.txt", "--epochs", "5", "--quiet")
    _framesel("train", store, "--agent", "dummy_attend", "--train", data / "train.txt", "--out", tmp_path / "d.pt",
              "--set", "epochs=2", "--seeds", "1", "--quiet")
    _framesel("evaluate", store, "--test", data / "test.txt", "--agents", tmp_path / "d.pt", "--out",
              tmp_path / "report", "--m", "1,2", "--quiet")
    res = json.loads((tmp_path / "report" / "results.json").read_text())
    assert "dummy_attend" in {r["method"] for r in res["rows"]}
    costs = res["meta"]["compute"]
    assert costs["flow_algorithm"] == "framediff" and costs["flow_kind"] == "counted"
    # priced by the plugin's own cost model: 4 FLOPs a pixel of the 340x256 demo frames
    assert costs["flow_gflops_per_pair"] == pytest.approx(4 * 340 * 256 / 1e9)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Flow cost (framediff)" in report and "dummy_attend" in report


def test_the_plugin_agent_keeps_the_agent_contract():
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "dummy_attend",
                        str(REPO / "tests" / "test_agent_contract.py")], cwd=REPO, env=cli_env(AGENT),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "6 passed" in r.stdout, r.stdout[-2000:]      # resume x2, rebuild, seeds, learns, refuses


def test_a_plugin_that_is_missing_or_broken_is_named(tmp_path):
    r = _framesel("info", tmp_path, plugins=(tmp_path / "nowhere.py",), check=False)
    assert r.returncode == 1 and f"Error: FRAMESEL_PLUGINS: plugin file {tmp_path / 'nowhere.py'} not found" in r.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no GPU here')\n")
    r = _framesel("extract", "--help", plugins=(broken,), check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"Error: FRAMESEL_PLUGINS: plugin {broken} failed to import: RuntimeError: no GPU here" in r.stderr


def test_load_plugins_reads_files_and_modules_once_and_names_failures(tmp_path, monkeypatch):
    from data.errors import InputError
    from data.plugins import load_plugins, plugin_entries

    counter = tmp_path / "counter.py"
    counter.write_text("import builtins\nbuiltins.framesel_test_imports = getattr(builtins, 'framesel_test_imports', 0) + 1\n")
    monkeypatch.setenv("FRAMESEL_PLUGINS", f"{counter}{os.pathsep} json ,")
    assert plugin_entries() == [str(counter), "json"]
    assert {str(counter), "json"} <= set(load_plugins())
    load_plugins()                                   # a second call imports nothing again
    import builtins
    assert builtins.framesel_test_imports == 1
    del builtins.framesel_test_imports
    monkeypatch.setenv("FRAMESEL_PLUGINS", str(tmp_path / "missing.py"))
    with pytest.raises(InputError, match="missing.py not found"):
        load_plugins()
    broken = tmp_path / "broken_in_process.py"
    broken.write_text("import no_such_module_anywhere\n")
    monkeypatch.setenv("FRAMESEL_PLUGINS", str(broken))
    with pytest.raises(InputError, match="broken_in_process.py failed to import: ModuleNotFoundError"):
        load_plugins()
    with pytest.raises(InputError, match="failed to import"):         # tried again, failing again
        load_plugins()
    monkeypatch.setenv("FRAMESEL_PLUGINS", "no_such_plugin_module")
    with pytest.raises(InputError, match="plugin no_such_plugin_module failed to import"):
        load_plugins()
