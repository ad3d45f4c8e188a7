"""The `framesel` CLI as a user meets it: light imports for `info`/`check`, `--quiet` and a
progress bar on every command that shows progress, `--agents` as users type it, and one
clear line (exit 1, no traceback) for the ordinary mistakes of issue 10's probes.

Stores here are real but small (create_store + written rows with random features and
logits over their classes), so `evaluate` runs in a second or two without a backbone."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from data.store import Layout, StreamSpec, VideoResult, create_store
from pipeline.cli import domain_errors, main

TORCH_THREADS = 1
REPO = Path(__file__).resolve().parents[1]
T, C, V = 4, 3, 6


def make_store(path, *, streams=("rgb", "flow"), T=T) -> Path:
    """(V videos, T positions, 1 crop) with features and logits over C classes, all done."""
    g = np.random.default_rng(0)
    layout = Layout(paths=tuple(f"c{i % C}/v{i}.mp4" for i in range(V)), labels=np.arange(V, dtype=np.int32) % C,
                    T=T, streams=tuple(StreamSpec(s, 1, 8, C) for s in streams),
                    attrs={"classes": ["a", "b", "c"], "crops": 1, "flow_stack": 2,
                           "backbone": {s: {"gflops_per_frame": 0.4} for s in streams}})
    with create_store(path, layout) as store:
        for i in range(V):
            st = {s: {"features": g.normal(size=(T, 1, 8)).astype(np.float16),
                      "logits": g.normal(size=(T, 1, C)).astype(np.float32)} for s in streams}
            store.write_video(i, VideoResult(num_frames=20, fps=25.0, frame_index=np.arange(T, dtype=np.int32) * 5,
                                             motion=g.random(T).astype(np.float32), streams=st))
    return Path(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "test.txt").write_text("".join(f"c{i % C}/v{i}.mp4 {i % C}\n" for i in range(V)))
    return make_store(root / "s.zarr")


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def clear_error(r, *words, code=1):
    """A handled error: the exit code, a SystemExit (not a raw exception), no traceback, and
    every word in the one-line message."""
    assert r.exit_code == code, r.output
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, (w, r.output)


def evaluate(store, *args, out=None, quiet=True):
    out = out or store.parent / "rep"
    return run("evaluate", store, "--test", store.parent / "test.txt", "--out", out, "--baselines", "uniform,random",
               *args, *(["--quiet"] if quiet else []))


# ----------------------------------------------------------------------------- imports

@pytest.mark.parametrize("command,suffix", [("info", ".zarr"), ("check", ".zarr"), ("info", ".h5"), ("check", ".h5")])
def test_info_and_check_import_neither_torch_nor_opencv(store, command, suffix):
    path = store if suffix == ".zarr" else store.parent / "s.h5"
    if not path.exists():
        make_store(path)
    code = ("import sys\nfrom pipeline.cli import main\n"
            f"main([{command!r}, {str(path)!r}], standalone_mode=False)\n"
            "heavy = [m for m in ('torch', 'cv2') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("OK" in r.stdout) if command == "check" else ("done" in r.stdout), r.stdout


def test_submit_library_has_no_click_and_the_cli_agrees_on_executors():
    import pipeline.submit as lib
    from pipeline import cli

    source = Path(lib.__file__).read_text()
    assert "import click" not in source and "pipeline.cli" not in source
    assert cli.EXECUTORS == lib.EXECUTORS


# ----------------------------------------------------------------------------- --quiet and progress

def test_evaluate_shows_progress_unless_quiet_or_ci(store, tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    r = evaluate(store, out=tmp_path / "a", quiet=False)
    assert r.exit_code == 0, r.output
    assert "evaluate" in r.stderr and "protocol" in r.stderr and "test · " in r.stderr, r.stderr
    r = evaluate(store, out=tmp_path / "b", quiet=True)
    assert r.exit_code == 0 and "protocol" not in r.stderr, r.stderr
    monkeypatch.setenv("CI", "1")
    r = evaluate(store, out=tmp_path / "c", quiet=False)
    assert r.exit_code == 0 and "protocol" not in r.stderr, r.stderr


@pytest.mark.parametrize("command", ["extract", "head", "train", "evaluate", "demo", "submit"])
def test_every_command_with_progress_takes_quiet(command):
    """submit forwards --quiet to its tasks with the other extract options."""
    if command == "submit":
        from pipeline.cli import parse_extract_args  # noqa: F401 - exists: what submit parses with
        assert main.get_command(None, "submit").context_settings.get("ignore_unknown_options")
        command = "extract"
    names = {o for p in main.get_command(None, command).params for o in p.opts}
    assert "--quiet" in names


# ----------------------------------------------------------------------------- --agents

def test_agents_options_take_several_paths_repeats_and_globs(tmp_path):
    from pipeline.options import spread_values

    names = ("--agents",)
    assert spread_values(["S", "--agents", "a", "b", "--out", "R", "c"], names) == \
        ["S", "--agents", "a", "--agents", "b", "--out", "R", "c"]
    assert spread_values(["--agents=a", "b", "--", "c"], names) == ["--agents=a", "--agents", "b", "--", "c"]
    for name in ("a.pt", "b.pt", "c.pt"):
        (tmp_path / name).write_bytes(b"x")
    a, b, c = (str(tmp_path / n) for n in ("a.pt", "b.pt", "c.pt"))
    cmd = main.get_command(None, "evaluate")
    base = [str(tmp_path), "--test", a, "--out", str(tmp_path / "r")]
    for agents in (["--agents", a, b, c], ["--agents", a, "--agents", b, c], ["--agents", str(tmp_path / "*.pt")],
                   ["--agents", a, "--agents", str(tmp_path / "[bc].pt"), a]):
        ctx = cmd.make_context("evaluate", base + agents)
        assert ctx.params["agent_paths"] == (a, b, c), agents
        assert ctx.params["out"] == str(tmp_path / "r")


def test_agents_glob_matching_nothing_names_the_pattern(store):
    r = evaluate(store, "--agents", store.parent / "nothing-*.pt")
    clear_error(r, "nothing-*.pt", "no file matches", code=2)
    r = evaluate(store, "--agents", store.parent / "absent.pt")
    clear_error(r, "absent.pt", "does not exist", code=2)


# ----------------------------------------------------------------------------- issue 10's probes

def test_fusion_with_a_stream_the_store_lacks_names_it_and_the_streams(store):
    r = evaluate(store, "--fusion", "rgb=1,depth=2")
    clear_error(r, "--fusion rgb=1,depth=2", "'depth'", "rgb, flow")
    r = evaluate(store, "--streams", "rgb", "--fusion", "rgb=1,flow=2")
    clear_error(r, "'flow'", "--streams")
    clear_error(evaluate(store, "--fusion", "rgb=1,rgb=2"), "rgb=1,rgb=2", code=2)


def test_unknown_stream_is_a_clear_error(store):
    clear_error(evaluate(store, "--streams", "depth"), "'depth'", "rgb, flow")


def test_budget_above_T_is_refused_naming_T_and_T_itself_means_all(store, tmp_path):
    clear_error(evaluate(store, "--m", "2,100"), "--m 100", f"T = {T}")
    assert not (store.parent / "rep").exists()
    r = evaluate(store, "--m", f"2,{T}", out=tmp_path / "r")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "r" / "results.json").read_text())["rows"]
    ms = {row["m"] for row in rows if row["protocol"] == "accuracy_vs_m"}
    assert ms == {2, T}
    all_kept = [row for row in rows if row["m"] == T and row["protocol"] == "accuracy_vs_m"]
    assert all(row["fraction_kept"] == 1.0 for row in all_kept)


def test_default_budgets_above_T_are_reported_not_silent(store, tmp_path, caplog):
    """Without --m the papers' budgets 4..25 apply; those above T run as T, with a warning
    (on stderr through the CLI's logging) saying exactly which budgets ran."""
    r = run("evaluate", store, "--test", store.parent / "test.txt", "--out", tmp_path / "r",
            "--baselines", "uniform", "--quiet")
    assert r.exit_code == 0, r.output
    assert f"T = {T} positions per video: evaluating m = {T} (m = {T} keeps all)" in caplog.text


def test_out_an_existing_file_or_beneath_one_is_refused_before_any_work(store, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    clear_error(evaluate(store, out=blocker), str(blocker), "not a directory")
    clear_error(evaluate(store, out=blocker / "sub" / "rep"), str(blocker), "not a directory")
    assert blocker.read_text() == "keep me"


def test_out_where_nothing_can_be_written_is_refused_before_any_work(store):
    """/proc/sys is read-only to every user, root included (os.access says so); a real
    read-only mount or a directory without permission is refused the same way."""
    if os.access("/proc/sys", os.W_OK) or not os.path.isdir("/proc/sys"):
        pytest.skip("needs a directory this process cannot write in (/proc/sys on Linux)")
    clear_error(evaluate(store, out="/proc/sys/framesel-report"), "/proc/sys", "cannot write")


def test_submit_without_submitit_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)     # `import submitit` raises ImportError
    (tmp_path / "list.txt").write_text("a.mp4 0\n")
    r = run("submit", "--executor", "local", "--", tmp_path / "list.txt", "--root", tmp_path,
            "--out", tmp_path / "s.zarr")
    clear_error(r, "submitit", "pip install 'framesel[cluster]'")
    assert not (tmp_path / "s.zarr").exists()


def test_a_path_beneath_a_regular_file_is_one_line_naming_it(tmp_path):
    """demo's --out beneath a file: the OSError of the real mkdir becomes one line naming it."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    r = run("demo", "--out", blocker / "demo", "--quiet")
    clear_error(r, str(blocker / "demo"), f"{blocker} is a file, not a directory")
    assert blocker.read_text() == "a file"


@pytest.mark.parametrize("value", ["0", "2,-1", "", "4,x"])
def test_budgets_must_be_positive_integers(store, value):
    clear_error(evaluate(store, "--m", value), "--m", "positive integers", code=2)


@pytest.mark.parametrize("err", [PermissionError(errno.EACCES, "Permission denied", "/data/x.zarr"),
                                 OSError(errno.ENOSPC, "No space left on device", "/data/x.h5"),
                                 NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/f/x")])
def test_os_errors_become_one_line_naming_the_file_and_the_cause(err):
    @click.command()
    @domain_errors
    def cmd():
        raise err

    r = CliRunner().invoke(cmd, [])
    clear_error(r, f"{err.filename}: {err.strerror}")
    assert r.output.count("\n") == 1


def test_real_bugs_keep_their_traceback():
    @click.command()
    @domain_errors
    def cmd():
        raise ZeroDivisionError("a bug")

    r = CliRunner().invoke(cmd, [])
    assert r.exit_code == 1 and isinstance(r.exception, ZeroDivisionError)


def test_os_error_without_a_file_name_keeps_its_message():
    from pipeline.edge import os_error_line

    assert os_error_line(OSError("Unable to open file (truncated file)")) == "Unable to open file (truncated file)"
    assert os_error_line(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")) == \
        "a -> b: Invalid cross-device link"



def test_agents_lists_every_registered_selector_as_one_record():
    """`framesel agents`: each registry entry as one record: options with the papers'
    defaults (what `train --set` takes) and the abilities it declares."""
    import dataclasses as dc

    from agents.base import selector_class, selector_names

    r = CliRunner().invoke(main, ["agents", "--json"])
    assert r.exit_code == 0, r.output
    records = {e["name"]: e for e in json.loads(r.output)}
    assert sorted(records) == selector_names()
    as_ = records["as"]
    assert as_["kind"] == "agent" and as_["options"]["lr"] == 1e-5 and as_["options"]["batch_size"] == 1
    assert as_["options"] == json.loads(json.dumps(dc.asdict(selector_class("as").Config()), default=str))
    assert records["tattn"]["abilities"]["partner"] == "tattn_noatt"
    assert records["tattn_noatt"]["abilities"]["partner_of"] == "tattn"
    assert records["dsn"]["abilities"]["needs"].startswith("per config: ")
    assert records["uniform"]["kind"] == "baseline" and records["uniform"]["options"] == {}
    assert records["key_oracle"]["abilities"]["needs_key"] is True
    text = CliRunner().invoke(main, ["agents"]).output
    assert "glimpse (agent): Paper 001's hard spatial attention" in text and "partner=glimpse_soft" in text


def _listing(command: str) -> dict:
    r = CliRunner().invoke(main, [command, "--json"])
    assert r.exit_code == 0, r.output
    return {e["name"]: e for e in json.loads(r.output)}


def test_every_registry_lists_its_entries_as_one_record_shape():
    """`framesel agents | flows | backbones | protocols`: every entry of every registry is one
    record of the same shape (data/record.py), read from the registry: a summary, options
    with their defaults, a cost model and what it declares."""
    from data.record import Record
    from evaluate.protocols import PROTOCOLS, ProtocolConfig
    from extract.backbones import backbone_names
    from extract.flow import flow_algorithms, tvl1_defaults

    listings = {c: _listing(c) for c in ("agents", "flows", "backbones", "protocols")}
    assert sorted(listings["flows"]) == flow_algorithms() and sorted(listings["backbones"]) == backbone_names()
    assert list(listings["protocols"]) == list(PROTOCOLS)                  # report order
    fields = {f for f in Record.__dataclass_fields__}
    for command, records in listings.items():
        for name, r in records.items():
            assert set(r) == fields and r["summary"] and r["cost"], (command, name)
    flows, backbones, protocols = listings["flows"], listings["backbones"], listings["protocols"]
    assert flows["tvl1"]["options"] == tvl1_defaults() and flows["tvl1"]["cost"].startswith("estimated: ")
    assert flows["tvl1-torch"]["abilities"]["reports_iterations"] and flows["farneback"]["cost"].startswith("counted")
    assert backbones["clip_vit_b16"]["abilities"]["streams"] == ["rgb"]
    assert backbones["efficientnet_lite0"]["abilities"]["weights"].startswith("ImageNet weights shipped")
    assert backbones["resnet50"]["abilities"]["weights"].startswith("none shipped")
    assert backbones["tiny_random"]["options"] == {"stream": "rgb", "flow_stack": 5, "checkpoint": None,
                                                   "preset": None}
    assert protocols["alpha"]["options"]["alphas"] == list(ProtocolConfig().alphas)
    assert protocols["fusion"]["abilities"]["needs"] == "both rgb and flow"
    text = CliRunner().invoke(main, ["backbones"]).output
    assert "tiny_random (backbone): A seeded random network" in text and "streams=['rgb']" in text


def test_a_registry_refuses_an_entry_it_cannot_describe():
    """Registration checks what a record would say: a backbone's weights and streams, a
    protocol's name registered twice."""
    from evaluate.protocol_registry import register_protocol
    from extract.backbones import register_backbone

    with pytest.raises(ValueError, match="weights must be one of"):
        register_backbone("nowhere", weights="downloaded")
    with pytest.raises(ValueError, match="streams of rgb, flow"):
        register_backbone("depth_only", streams=("depth",))
    with pytest.raises(ValueError, match="'alpha' is already registered"):
        register_protocol("alpha", source="none")(lambda run: [])


def test_a_record_reads_defaults_and_names_what_it_does_not_know():
    """data/record.py: a config's defaults (a default factory called, none given: None), the
    kinds a record may have; an unknown protocol is named with the known ones."""
    import dataclasses as dc

    from data.errors import UnknownNameError
    from data.record import Record, field_defaults
    from evaluate.protocol_registry import get_protocol

    @dc.dataclass
    class Config:
        required: int
        ms: tuple = (1, 2)
        weights: list = dc.field(default_factory=lambda: [1.0])

    assert field_defaults(Config) == {"required": None, "ms": (1, 2), "weights": [1.0]}
    assert Record("agent", "x", "", {}, "", {}).learned and not Record("flow", "x", "", {}, "", {}).learned
    with pytest.raises(ValueError, match="record kind must be one of"):
        Record("metric", "x", "", {}, "", {})
    with pytest.raises(UnknownNameError, match="accuracy_vs_m"):
        get_protocol("accuracy_vs_n")
