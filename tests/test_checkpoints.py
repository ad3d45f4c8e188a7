"""Agent checkpoints are data (issue 10): nothing in a checkpoint file executes, every bad
file gets a one-line answer naming it, `train` is idempotent and extendable, its log is
never stale, and options are checked in one place. Through the real CLI on a real store."""
import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from agents.base import load_agent, selector_names
from agents.checkpoint import non_plain
from agents.options import make_config
from agents.synthetic import planted_states
from data.errors import InputError, StoreError
from data.store import Layout, StreamSpec, VideoResult, create_store
from pipeline.cli import main

TORCH_THREADS = 1
T, K, D, C, V = 5, 1, 6, 3, 24
# The shortest fit of every registered agent (a new agent must be added here).
TINY = {"as": ["epochs=1", "m=2", "hidden=4", "batch_size=8"],
        "dsn": ["epochs=1", "hidden=4", "batch_size=8"],
        "tattn": ["epochs=1", "hidden=4", "layers=1", "iterations=2", "test_last=1", "batch_size=8"],
        "rtsae": ["pretrain_epochs=1", "epochs=1", "hidden=4", "proj_dim=4", "gate_dim=2", "fusion_dim=4",
                  "classifier_hidden=4", "batch_size=8"],
        "glimpse": ["epochs=1", "hidden=4", "layers=1", "batch_size=8", "episodes=2"]}
TINY["tattn_noatt"] = TINY["tattn"]
TINY["rtsae_nogate"] = ["epochs=1", "fusion_dim=4", "classifier_hidden=4", "batch_size=8"]
TINY["glimpse_soft"] = ["epochs=1", "hidden=4", "layers=1", "batch_size=8"]
TINY["dsn_nosampler"] = ["epochs=1", "batch_size=8"]


def make_store(root, name="s.zarr", *, classes=C, dim=D, seed=0):
    """A real Zarr store of V planted videos (rgb features, logits, 2x2 feature maps) and
    its list file; every store made here shares one config hash, as stores of one
    extraction setup do. Returns (store path, list path)."""
    st = planted_states(V=V, T=T, K=K, D=dim, C=classes, n_key=2, seed=seed, with_maps=True, map_size=2)
    paths = tuple(f"v{i}.mp4" for i in range(V))
    layout = Layout(paths=paths, labels=st.labels.numpy().astype(np.int32), T=T,
                    streams=(StreamSpec("rgb", K, dim, classes, (2, 2, dim)),),
                    attrs={"classes": [f"c{i}" for i in range(classes)], "multilabel": False, "T": T,
                           "crops": K, "flow_stack": 1, "config_sha256": "planted",
                           "backbone": {"rgb": {"gflops_per_frame": 0.4}}})
    path = root / name
    with create_store(path, layout) as s:
        for i in range(V):
            s.write_video(i, VideoResult(
                num_frames=T, fps=25.0, frame_index=np.arange(T, dtype=np.int32), motion=st.motion[i].numpy(),
                streams={"rgb": {"features": st.features[i].numpy().astype(np.float16),
                                 "logits": st.logits[i].numpy(),
                                 "feature_maps": st.feature_maps[i].numpy().astype(np.float16)}}))
    lst = root / f"{name}.txt"
    lst.write_text("".join(f"{p} {int(y)}\n" for p, y in zip(paths, st.labels)))
    return path, lst


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    store, lst = make_store(root)
    return root, store, lst


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def train(store, lst, out, agent="as", sets=None, *extra):
    """One seed of ``agent`` to ``out`` itself, without its partner (tests/test_partners.py)."""
    sets = TINY[agent] if sets is None else sets
    return cli("train", store, "--agent", agent, "--train", lst, "--out", out,
               *[a for s in sets for a in ("--set", s)], "--seeds", "1", "--no-partner", "--quiet", *extra)


def assert_clean_error(r, *needles):
    """Exit 1 through click (SystemExit, not a raw exception), one line naming ``needles``."""
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    for needle in needles:
        assert str(needle) in r.output, (needle, r.output)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# -- the saved format -----------------------------------------------------------------------
def test_every_agent_is_in_the_matrix():
    assert set(TINY) == set(selector_names(learned=True))


@pytest.mark.parametrize("agent", sorted(TINY))
def test_every_agent_checkpoint_is_plain_data(planted, tmp_path, agent):
    root, store, lst = planted
    out = tmp_path / f"{agent}.pt"
    r = train(store, lst, out, agent)
    assert r.exit_code == 0, r.output
    ck = torch.load(out, weights_only=True)          # no allow-list at all
    assert non_plain(ck) == []
    assert ck["framesel_checkpoint"] == 2 and ck["finished"] is True
    assert {"optimizer", "epoch", "rng"} <= set(ck)   # a finished checkpoint stays resumable
    assert type(ck["versions"]["torch"]) is str
    back = load_agent(out)
    assert back.name == agent and back.history == ck["history"]


def test_non_plain_finds_what_is_not_data():
    assert non_plain({"a": [1, 2.0, "x", None, True, (torch.zeros(1),)]}) == []
    assert non_plain({"h": [{"loss": np.float32(1)}]}) == ["checkpoint.h[0].loss: numpy.float32"]
    assert non_plain({"v": torch.torch_version.TorchVersion("2.0")}) == \
        ["checkpoint.v: torch.torch_version.TorchVersion"]


# -- malicious pickles ----------------------------------------------------------------------
class _Evil:
    """Unpickling this creates the directory ``marker``: a visible side effect."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def _evil_file(path, marker, kind):
    if kind == "torch.save":      # what an attacker would share: a torch zip that looks like ours
        torch.save({"framesel_checkpoint": 1, "agent": "as", "config": {}, "payload": _Evil(marker)}, path)
    else:                         # a bare pickle, old protocol (GLOBAL) or new (STACK_GLOBAL)
        with open(path, "wb") as fh:
            pickle.dump(_Evil(marker), fh, protocol=2 if kind == "pickle2" else pickle.HIGHEST_PROTOCOL)
    return path


def _video_list(tmp_path):
    from conftest import moving_texture, write_video

    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "v0.mp4", moving_texture(6, h=64, w=80))
    (tmp_path / "videos.txt").write_text("v0.mp4 0\n")
    return tmp_path / "videos.txt"


def _run_with_checkpoint(planted, tmp_path, command, ck):
    """Run ``command`` (evaluate | train | extract) with ``ck`` as the agent / resume /
    backbone checkpoint it reads."""
    root, store, lst = planted
    if command == "evaluate":
        return cli("evaluate", store, "--test", lst, "--agents", ck, "--out", tmp_path / "report", "--m", "2")
    if command == "train":
        return train(store, lst, ck)
    videos = _video_list(tmp_path)
    return cli("extract", videos, "--root", tmp_path / "videos", "--out", tmp_path / "x.zarr", "--frames", "2",
               "--flow-stack", "1", "--crops", "1", "--flow", "farneback", "--quiet", "--checkpoint", f"rgb={ck}")


@pytest.mark.parametrize("kind", ["torch.save", "pickle2", "pickle5"])
@pytest.mark.parametrize("command", ["evaluate", "train", "extract"])
def test_malicious_pickle_runs_nothing(planted, tmp_path, command, kind):
    marker = tmp_path / "PWNED"
    evil = _evil_file(tmp_path / "evil.pt", marker, kind)
    before = sha(evil)
    r = _run_with_checkpoint(planted, tmp_path, command, evil)
    assert not marker.exists(), "the checkpoint ran code"
    assert_clean_error(r, evil, "not a readable torch file")
    if kind == "torch.save":
        assert "os.makedirs" in r.output or "posix.makedirs" in r.output
        if command != "extract":
            assert "re-train (or convert)" in r.output
    assert sha(evil) == before                      # train did not overwrite it


@pytest.mark.parametrize("kind", ["random", "empty", "text", "directory"])
@pytest.mark.parametrize("command", ["evaluate", "train", "extract"])
def test_unreadable_checkpoint_is_a_clear_error(planted, tmp_path, command, kind):
    bad = tmp_path / "bad.pt"
    if kind == "directory":
        bad.mkdir()
    else:
        bad.write_bytes({"random": np.random.default_rng(0).bytes(3000), "empty": b"",
                         "text": b"epochs: 3\nlr: 0.1\n"}[kind])
    r = _run_with_checkpoint(planted, tmp_path, command, bad)
    if command == "evaluate" and kind == "directory":   # --agents takes files: click's usage error
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
        assert "Traceback" not in r.output and "is a directory" in r.output and str(bad) in r.output
        return
    assert_clean_error(r, bad, {"random": "not a readable torch file", "empty": "is empty",
                                "text": "not a readable torch file", "directory": "is a directory"}[kind])
    if kind != "directory":
        assert bad.read_bytes() == ({"random": np.random.default_rng(0).bytes(3000), "empty": b"",
                                     "text": b"epochs: 3\nlr: 0.1\n"}[kind])


def test_torch_files_that_are_not_agent_checkpoints(tmp_path):
    cases = {"tensors": ({"w": torch.zeros(2)}, "not a framesel agent checkpoint"),
             "list": ([torch.zeros(2)], "not a framesel agent checkpoint (it holds a list)"),
             "future": ({"framesel_checkpoint": 7}, "format 7"),
             "damaged": ({"framesel_checkpoint": 2, "agent": "as"}, "damaged: missing or wrong config"),
             "unknown agent": ({"framesel_checkpoint": 2, "agent": "nope", "config": {}, "num_classes": 3,
                                "feature_dim": 6, "seed": 0, "state_dict": {}}, "unknown selector 'nope'"),
             "baseline": ({"framesel_checkpoint": 2, "agent": "uniform", "config": {}, "num_classes": 3,
                           "feature_dim": 6, "seed": 0, "state_dict": {}}, "a baseline, not an agent"),
             "weights": ({"framesel_checkpoint": 2, "agent": "as", "config": {"hidden": 4}, "num_classes": 3,
                          "feature_dim": 6, "seed": 0, "state_dict": {"x": torch.zeros(1)}},
                         "weights do not fit as"),
             "dtype": ({"framesel_checkpoint": 2, "agent": "as", "config": {}, "num_classes": 3, "feature_dim": 6,
                        "seed": 0, "state_dict": {}, "history": [torch.float32]}, "damaged: .*torch.dtype")}
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_agent(tmp_path / f"{name}.pt")
    with pytest.raises(InputError, match="does not exist"):
        load_agent(tmp_path / "missing.pt")


# -- checkpoints of earlier framesel versions (format 1) ----------------------------------------
def _as_format_1(new, old, **changes):
    """The checkpoint the code before issue 10 wrote: format 1, ``versions.torch`` pickled as
    torch's TorchVersion, and (finished) no training state."""
    ck = torch.load(new, weights_only=True)
    for key in ("optimizer", "epoch", "rng", "baseline"):
        ck.pop(key)
    ck.update(framesel_checkpoint=1, **changes)
    ck["versions"]["torch"] = torch.__version__          # a TorchVersion, not a str
    torch.save(ck, old)


def test_format_1_checkpoints_keep_loading(planted, tmp_path):
    root, store, lst = planted
    new, old = tmp_path / "new.pt", tmp_path / "old.pt"
    assert train(store, lst, new).exit_code == 0
    _as_format_1(new, old)
    a, b = load_agent(new), load_agent(old)
    states = planted_states(V=4, T=T, K=K, D=D, C=C, seed=1)
    assert torch.equal(a.score(states), b.score(states)) and b.history == a.history
    r = cli("evaluate", store, "--test", lst, "--agents", old, "--out", tmp_path / "rep", "--m", "2")
    assert r.exit_code == 0, r.output
    # it cannot be resumed (it has no optimizer state): said plainly, the file untouched
    before = sha(old)
    assert_clean_error(train(store, lst, old, "as", TINY["as"][1:] + ["epochs=2"]), old, "optimizer state")
    assert sha(old) == before


def _write_format_1(agent, path, **extra) -> None:
    """What ``Agent.save`` wrote before issue 10 (commit 15d7a6d), key for key: the config as
    ``dataclasses.asdict`` (tuples), ``versions.torch`` as torch's TorchVersion, ``extra`` as
    the fit loop passed it."""
    from data import __version__

    torch.save({"framesel_checkpoint": 1, "agent": agent.name, "config": dataclasses.asdict(agent.config),
                "num_classes": agent.num_classes, "feature_dim": agent.feature_dim, "seed": agent.seed,
                "store": agent.store_identity, "history": agent.history,
                "state_dict": agent.module.state_dict(),
                "versions": {"framesel": __version__, "torch": torch.__version__}, **extra}, path)


def test_format_1_files_of_the_old_writer_load_and_extend(tmp_path):
    """Files in the layout the code before issue 10 wrote — the finished checkpoint (no
    training state) and the per-epoch, resumable one of the same run: both load, and the
    per-epoch one, extended by this code to 2 epochs, equals a straight 2-epoch run."""
    from agents.as_agent import ASAgent, ASConfig

    st = planted_states(V=8, T=5, K=1, D=6, C=3, n_key=2, seed=0)
    cfg = ASConfig(epochs=2, m=2, hidden=4, batch_size=4)
    one = ASAgent(dataclasses.replace(cfg, epochs=1), num_classes=3, feature_dim=6, seed=0)
    one.fit(st, checkpoint_path=tmp_path / "epoch1.pt")
    state = torch.load(tmp_path / "epoch1.pt", weights_only=True)     # the fit loop's extras
    resumable, finished_path = tmp_path / "a.pt", tmp_path / "finished.pt"
    _write_format_1(one, resumable, **{k: state[k] for k in ("optimizer", "epoch", "rng", "baseline")})
    _write_format_1(one, finished_path, command="framesel train ...", finished=True)
    finished = load_agent(finished_path)
    assert finished.config == dataclasses.replace(cfg, epochs=1) and len(finished.history) == 1
    assert torch.equal(load_agent(resumable).score(st), finished.score(st))
    straight = ASAgent(cfg, num_classes=3, feature_dim=6, seed=0)
    straight.fit(st)
    resumed = ASAgent(cfg, num_classes=3, feature_dim=6, seed=0)
    resumed.fit(st, checkpoint_path=resumable)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    a, b = straight.module.state_dict(), resumed.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(resumable, weights_only=True)["framesel_checkpoint"] == 2   # rewritten as data


def test_old_checkpoint_with_other_objects_says_retrain(planted, tmp_path):
    root, store, lst = planted
    new, old = tmp_path / "new.pt", tmp_path / "old.pt"
    assert train(store, lst, new).exit_code == 0
    _as_format_1(new, old, history=[{"loss": np.float64(0.5)}])   # a numpy scalar: a global
    r = cli("evaluate", store, "--test", lst, "--agents", old, "--out", tmp_path / "rep", "--m", "2")
    assert_clean_error(r, old, "re-train (or convert)", "numpy")


# -- train is idempotent and extendable ------------------------------------------------------
def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.parametrize("agent", ["as", "dsn", "rtsae"])
def test_train_rerun_and_extend(planted, tmp_path, agent):
    root, store, lst = planted
    base = [s for s in TINY[agent] if not s.startswith("epochs=")]
    out, straight = tmp_path / "a.pt", tmp_path / "straight.pt"
    assert train(store, lst, out, agent, base + ["epochs=2"]).exit_code == 0
    before = sha(out)
    r = train(store, lst, out, agent, base + ["epochs=2"])          # the same command again
    assert r.exit_code == 0, r.output
    done = 2 + (1 if agent == "rtsae" else 0)
    assert f"already trained for {done} epochs" in r.output
    assert sha(out) == before                                         # nothing retrained or rewritten
    r = train(store, lst, out, agent, base + ["epochs=4"])            # extend
    assert r.exit_code == 0 and f"{done + 2} epochs" in r.output, r.output
    assert train(store, lst, straight, agent, base + ["epochs=4"]).exit_code == 0
    a, b = _weights(out), _weights(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ck = torch.load(out, weights_only=True)
    assert [h["epoch"] for h in ck["history"]] == list(range(1, done + 3))
    before = sha(out)
    assert_clean_error(train(store, lst, out, agent, base + ["epochs=3"]), "cannot be shortened")
    assert sha(out) == before


def test_train_with_another_config_or_seed_is_refused(planted, tmp_path):
    root, store, lst = planted
    out = tmp_path / "a.pt"
    assert train(store, lst, out).exit_code == 0
    before = sha(out)
    assert_clean_error(train(store, lst, out, "as", TINY["as"][:-1] + ["batch_size=4"]),
                       out, "batch_size 8 (this run: 4)")
    assert_clean_error(train(store, lst, out, "as", None, "--seed", "3"), "seed 0 (this run: 3)")
    assert_clean_error(train(store, lst, out, "dsn"), "checkpoint of agent 'as', not 'dsn'")
    assert_clean_error(train(store, lst, out, "as", TINY["as"][1:] + ["epochs=0"]), "epochs=0")
    assert sha(out) == before


# -- the JSONL log ------------------------------------------------------------------------------
def _log_rows(out):
    return [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]


def test_fresh_run_starts_a_new_log(planted, tmp_path):
    root, store, lst = planted
    out = tmp_path / "a.pt"
    out.with_suffix(".jsonl").write_text(json.dumps({"epoch": 1, "loss": 123.0}) + "\n" * 2)
    assert train(store, lst, out).exit_code == 0
    rows = _log_rows(out)
    assert [r["epoch"] for r in rows] == [1] and rows[0]["loss"] != 123.0


def test_resumed_run_rewrites_the_log_to_the_checkpoint(planted, tmp_path):
    root, store, lst = planted
    out = tmp_path / "a.pt"
    sets = TINY["as"][1:]
    assert train(store, lst, out, "as", sets + ["epochs=2"]).exit_code == 0
    with open(out.with_suffix(".jsonl"), "a") as fh:       # epoch 3 logged, then killed before its save
        fh.write(json.dumps({"epoch": 3, "loss": 123.0}) + "\n")
    assert train(store, lst, out, "as", sets + ["epochs=3"]).exit_code == 0
    rows = _log_rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["loss"] != 123.0
    assert rows == torch.load(out, weights_only=True)["history"]


# -- options -------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, needles", [
    ("epochs=abc", ["epochs='abc'", "not an integer"]),
    ("epochs=1.5", ["epochs=1.5", "not an integer"]),
    ("lr=-1", ["lr=-1.0", "must be > 0"]),
    ("baseline_momentum=1", ["baseline_momentum=1.0", "in [0, 1)"]),
    ("lr_milestones=20", ["lr_milestones=20", "list of numbers"]),
    ("colour=red", ["no option 'colour'", "lr_milestones"]),
])
def test_bad_train_options(planted, tmp_path, setting, needles):
    root, store, lst = planted
    out = tmp_path / "a.pt"
    assert_clean_error(train(store, lst, out, "as", [setting]), *needles)
    assert not out.exists()


@pytest.mark.parametrize("args, needles", [(["--lr", "-5"], ["lr=-5.0", "> 0"]),
                                           (["--epochs", "0"], ["epochs=0", ">= 1"])])
def test_bad_head_options(planted, args, needles):
    root, store, lst = planted
    assert_clean_error(cli("head", store, "--train", lst, "--quiet", *args), *needles)


def test_make_config_coerces_to_the_field_types():
    from agents.as_agent import ASConfig
    from agents.rtsae import RTSAEConfig

    c = make_config(ASConfig, [("lr", 1), ("lr_milestones", [3, 5]), ("epochs", 2.0)], owner="as")
    assert c.lr == 1.0 and type(c.lr) is float and c.lr_milestones == (3, 5) and c.epochs == 2
    assert make_config(RTSAEConfig, {"aug_shift": "false"}, owner="rtsae").aug_shift is False
    for bad in ({"epochs": True}, {"mode": 3}, {"lr": float("nan")}):
        with pytest.raises(InputError):
            make_config(ASConfig, bad, owner="as")


# -- an agent for another store ----------------------------------------------------------------
@pytest.mark.parametrize("other, needles", [({"classes": 4}, ["3 classes", "has 4"]),
                                            ({"dim": 8}, ["features of size 6", "has 8"])])
def test_agent_for_other_shapes_is_refused(planted, tmp_path, other, needles):
    root, store, lst = planted
    ck = tmp_path / "a.pt"
    assert train(store, lst, ck).exit_code == 0
    store2, lst2 = make_store(tmp_path, "other.zarr", **other)
    r = cli("evaluate", store2, "--test", lst2, "--agents", ck, "--out", tmp_path / "rep", "--m", "2")
    assert_clean_error(r, ck, *needles)


# -- --out problems --------------------------------------------------------------------------------
def test_out_is_a_text_file(planted, tmp_path):
    root, store, lst = planted
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert_clean_error(train(store, lst, notes), notes, "not an agent checkpoint", "left untouched")
    assert notes.read_text() == "my notes\n"


def test_out_is_a_directory(planted, tmp_path):
    root, store, lst = planted
    assert_clean_error(train(store, lst, tmp_path), tmp_path, "is a directory")


def test_out_under_a_regular_file(planted, tmp_path):
    """Unwritable --out, as root too (root ignores chmod): its parent is a regular file."""
    root, store, lst = planted
    (tmp_path / "somefile").write_text("x")
    out = tmp_path / "somefile" / "a.pt"
    assert_clean_error(train(store, lst, out), "cannot", "somefile")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 directory regardless")
def test_out_in_a_read_only_directory(planted, tmp_path):
    root, store, lst = planted
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_clean_error(train(store, lst, ro / "a.pt"), "cannot write", ro / "a")
    finally:
        ro.chmod(0o755)


def test_save_wraps_os_errors(tmp_path):
    from agents.as_agent import ASAgent, ASConfig

    (tmp_path / "file").write_text("x")
    agent = ASAgent(ASConfig(hidden=4), num_classes=C, feature_dim=D)
    with pytest.raises(StoreError, match="cannot write agent checkpoint .*file/a.pt"):
        agent.save(tmp_path / "file" / "a.pt")


def test_one_place_loads_torch_files():
    """Every torch file goes through data.torchfile (weights_only); nothing else unpickles."""
    root = Path(__file__).resolve().parents[1]
    offenders = [f"{p.relative_to(root)}: {needle}" for pkg in ("agents", "data", "evaluate", "extract", "pipeline")
                 for p in sorted((root / pkg).rglob("*.py")) if p.name != "torchfile.py"
                 for needle in ("torch.load(", "pickle.load", "pickle.loads", "weights_only=False")
                 if needle in p.read_text(encoding="utf-8")]
    assert offenders == []


@pytest.mark.parametrize("name, field, trained_with", [("tattn", "base_width", 0),
                                                       ("glimpse", "penalty", "doubly_stochastic")])
def test_a_checkpoint_older_than_a_field_loads_with_what_it_was_trained_with(name, field, trained_with,
                                                                             tmp_path):
    """tattn's base_width (issue 11) and glimpse's penalty came after checkpoints without
    them were written, which were trained with plain Adadelta and [11]'s penalty: loaded,
    they say so instead of claiming today's defaults."""
    from agents.base import selector_class

    cls = selector_class(name)
    st = planted_states(V=6, T=4, K=1, D=4, C=3, n_key=1, seed=0, with_maps=name == "glimpse", map_size=2)
    small = dict(hidden=4, epochs=1, batch_size=4)
    agent = (cls.for_states(cls.Config(**small), st) if name == "glimpse"
             else cls(cls.Config(**small, layers=1, iterations=2, test_last=1), num_classes=3, feature_dim=4))
    agent.fit(st, checkpoint_path=tmp_path / "a.pt")
    ck = torch.load(tmp_path / "a.pt", weights_only=True)
    assert ck["config"][field] != trained_with                      # today's default
    del ck["config"][field]
    torch.save(ck, tmp_path / "old.pt")
    old = load_agent(tmp_path / "old.pt")
    assert getattr(old.config, field) == trained_with
    assert torch.equal(old.score(st), agent.score(st))
