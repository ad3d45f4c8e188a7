"""The composer of untrimmed videos (data/compose.py): plans, real H.264 composites decoded
again, every segment's frame range checked against the frames of its source clip."""
import json
import re

import numpy as np
import pytest

from conftest import moving_texture, shared_data, write_video
from data.compose import ComposeConfig, compose, count_frames, decode_segment, plan, reuse_counts
from data.errors import InputError
from data.lists import read_list
from data.truth import read_truth
from extract.decode import decode

SMALL = dict(size=(64, 48), fps=25.0, segments=(3, 4), targets=(1, 2))


def _sources(root, specs):
    """Write clips (class, name, frames, fps, (w, h), seed) under root and a list of them."""
    lines = []
    for cls, name, n, fps, (w, h), seed in specs:
        (root / cls).mkdir(parents=True, exist_ok=True)
        frames = moving_texture(n, h=h, w=w, shift=(7, 3), seed=seed)
        frames = np.clip(frames.astype(int) + 12 * seed - 40, 0, 255).astype(np.uint8)   # each clip its own look
        write_video(root / cls / name, frames, fps=fps)
        lines.append(f"{cls}/{name} {1 if cls == 'fight' else 0}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("noFight\nfight\n")
    return root / "list.txt", root / "classes.txt"


SPECS = [("fight", "f0.mp4", 12, 30.0, (96, 64), 1),       # 0.4 s -> 10 frames at 25 fps
         ("fight", "f1.mp4", 6, 10.0, (48, 64), 2),        # portrait, 0.6 s -> 15 frames (repeats)
         ("noFight", "n0.mp4", 20, 25.0, (80, 60), 3),
         ("noFight", "n1.mp4", 9, 15.0, (160, 90), 4),     # 0.6 s -> 15 frames
         ("noFight", "n2.mp4", 16, 20.0, (64, 48), 5),     # 0.8 s -> 20 frames
         ("noFight", "n3.mp4", 24, 30.0, (100, 60), 6),    # 0.8 s -> 20 frames
         ("noFight", "n4.mp4", 11, 25.0, (66, 50), 7)]
EXPECTED_FRAMES = {"fight/f0.mp4": 10, "fight/f1.mp4": 15, "noFight/n0.mp4": 20, "noFight/n1.mp4": 15,
                   "noFight/n2.mp4": 20, "noFight/n3.mp4": 20, "noFight/n4.mp4": 11}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    lst, classes = _sources(root, SPECS)
    out = root / "composites"
    record = compose(lst, root, out, ComposeConfig(videos=4, seed=3, **SMALL), classes=classes)
    return root, out, record


def _mad(a, b) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _check_segments(out, root, entry, path, size):
    """Decode the composite as extraction does and compare each segment with its source."""
    video = decode(out / path, size=size)
    assert video.num_frames == entry["num_frames"]
    segs = entry["segments"]
    assert segs[0]["start"] == 0 and segs[-1]["end"] == entry["num_frames"]
    assert all(a["end"] == b["start"] for a, b in zip(segs, segs[1:]))     # every frame in exactly one
    for seg in segs:
        src = decode_segment(root / seg["source"], ComposeConfig(size=size))
        got = video.frames[seg["start"]:seg["end"]]
        assert len(got) == len(src) == seg["end"] - seg["start"]
        for i in range(len(got)):
            here = _mad(got[i], src[i])
            # aligned: nearer to its own source frame than to any other within 3 frames (repeats
            # of a low-fps clip are the same picture, so only distinct ones count)
            others = [_mad(got[i], src[j]) for j in range(max(0, i - 3), min(len(src), i + 4))
                      if _mad(src[j], src[i]) > 10]
            assert here < 10 and all(here < 0.5 * o for o in others), (path, seg, i, here, others)
    return video


def test_composites_decode_to_their_truth(made):
    root, out, record = made
    truth = json.loads((out / "truth.json").read_text())
    lines = (out / "list.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == list(truth) and len(truth) == 4
    assert (out / "classes.txt").read_text() == "not_fight\nfight\n"
    for ln in lines:
        path, label = ln.split()
        entry = truth[path]
        _check_segments(out, root, entry, path, (64, 48))
        classes = [s["class"] for s in entry["segments"]]
        assert (classes.count("fight") > 0) == (label == "1")
        assert classes.count("fight") <= 2 and 3 <= len(classes) <= 4
        assert len({s["source"] for s in entry["segments"]}) == len(classes)     # no clip twice in one
        for s in entry["segments"]:        # the fps conversion, computed by hand from each clip's duration
            assert s["end"] - s["start"] == EXPECTED_FRAMES[s["source"]]
    assert record["num_positive"] == 2 and record["failed_sources"] == {}
    assert sum(record["reuse"].values()) == sum(len(t["segments"]) for t in truth.values())
    assert len(read_truth(out / "truth.json")) == 4              # the reader's checks pass


def test_compose_is_deterministic_and_idempotent(made, tmp_path):
    root, out, record = made
    again = compose(root / "list.txt", root, out, ComposeConfig(videos=4, seed=3, **SMALL),
                    classes=root / "classes.txt")
    assert again == record                              # found compose.json: nothing redone
    other = tmp_path / "again"
    compose(root / "list.txt", root, other, ComposeConfig(videos=4, seed=3, **SMALL), classes=root / "classes.txt")
    for name in ("truth.json", "list.txt"):
        assert (other / name).read_bytes() == (out / name).read_bytes()
    for p in json.loads((out / "truth.json").read_text()):
        assert (other / p).read_bytes() == (out / p).read_bytes()       # same encoder build: same bytes


def test_plan_balances_reuse_and_places_targets():
    labels = [1] * 10 + [0] * 30
    from data.lists import VideoList

    vl = VideoList(tuple(f"c{i}.mp4" for i in range(40)), np.array(labels), ("noFight", "fight"), False, "t", "x")
    cfg = ComposeConfig(videos=20, seed=5)
    plans = plan(vl, cfg)
    assert plans == plan(vl, cfg) and plans != plan(vl, ComposeConfig(videos=20, seed=6))
    assert sum(p.label for p in plans) == 10
    for p in plans:
        n_target = sum(labels[s] for s in p.sources)
        assert (1 <= n_target <= 2) if p.label else n_target == 0
        assert 6 <= len(p.sources) <= 12 and len(set(p.sources)) == len(p.sources)
    counts = reuse_counts(plans, vl)
    fight = [counts[f"c{i}.mp4"] for i in range(10)]
    other = [counts[f"c{i}.mp4"] for i in range(10, 40)]
    assert max(fight) - min(fight) <= 1 and max(other) - min(other) <= 1       # least used first
    positions = {p.sources.index(s) for p in plans if p.label for s in p.sources if labels[s]}
    assert len(positions) > 4                                                   # targets at random places


def test_plan_refuses_what_it_cannot_build():
    from data.lists import VideoList
    vl = VideoList(("a.mp4", "b.mp4"), np.array([0, 1]), ("noFight", "fight"), False, "t", "x")
    with pytest.raises(InputError, match="distinct"):
        plan(vl, ComposeConfig(videos=2))
    with pytest.raises(InputError, match="no class 'punch'"):
        plan(vl, ComposeConfig(videos=2, target_class="punch"))
    with pytest.raises(InputError, match="even"):
        ComposeConfig(size=(65, 48))
    for bad, words in (({"segments": (5, 3)}, "segments must be 1 <= low <= high, got (5, 3)"),
                       ({"targets": (0, 1)}, "targets must be 1 <= low <= high"),
                       ({"segments": (2, 4), "targets": (1, 3)}, "targets (1, 3) exceed the fewest segments 2"),
                       ({"videos": 0}, "videos must be >= 1, got 0"), ({"fps": 0.5}, "fps must lie in [1, 120]")):
        with pytest.raises(InputError, match=re.escape(words)):
            ComposeConfig(**bad)
    multi = VideoList(("a.mp4", "b.mp4"), np.array([[1, 0], [0, 1]]), ("noFight", "fight"), True, "t", "x")
    with pytest.raises(InputError, match="composites need a single-label list"):
        plan(multi, ComposeConfig(videos=2))
    only = VideoList(("a.mp4", "b.mp4"), np.array([1, 1]), ("noFight", "fight"), False, "t", "x")
    with pytest.raises(InputError, match="composites need clips of 'fight' and of other classes; usable: 2 and 0"):
        plan(only, ComposeConfig(videos=2))


def test_a_broken_source_is_recorded_and_left_out(tmp_path):
    lst, classes = _sources(tmp_path, SPECS)
    (tmp_path / "noFight" / "bad.mp4").write_bytes(b"not a video")
    (tmp_path / "noFight" / "n5.mp4").write_bytes((tmp_path / "noFight" / "n4.mp4").read_bytes())
    lst.write_text(lst.read_text() + "noFight/bad.mp4 0\nnoFight/n5.mp4 0\n")
    # 4 composites hold at least 8 noFight segments: least used first, every one of the 7 is planned
    record = compose(lst, tmp_path, tmp_path / "out", ComposeConfig(videos=4, seed=0, **SMALL), classes=classes)
    assert list(record["failed_sources"]) == ["noFight/bad.mp4"] and record["failed_composites"] == {}
    assert record["reuse"]["noFight/bad.mp4"] == 0 and record["num_videos"] == 4      # stood in for
    truth = json.loads((tmp_path / "out" / "truth.json").read_text())
    assert all(3 <= len(t["segments"]) <= 4 for t in truth.values())


def test_real_fight_composites(tmp_path):
    fight = shared_data("fight")
    full = read_list(fight / "test.txt", classes=fight / "classes.txt")
    few = [i for i, lab in enumerate(full.labels) if lab == 1][:2] + [i for i, lab in enumerate(full.labels)
                                                                     if lab == 0][:12]
    (tmp_path / "few.txt").write_text("".join(f"{full.paths[i]} {full.labels[i]}\n" for i in few))
    out = tmp_path / "out"
    record = compose(tmp_path / "few.txt", fight, out, ComposeConfig(videos=2, seed=1), classes=fight / "classes.txt")
    truth = json.loads((out / "truth.json").read_text())
    assert record["num_videos"] == 2 and record["num_positive"] == 1
    for path, entry in truth.items():
        _check_segments(out, fight, entry, path, (340, 256))
        assert count_frames(out / path, (34, 26)) == entry["num_frames"]
        assert 6 <= len(entry["segments"]) <= 12


def test_compose_only_command(made, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import shutil

    root = made[0]
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "untrimmed.py"
    out = tmp_path / "cli"
    args = [sys.executable, str(script), "--compose-only", "--list", str(tmp_path / "list.txt"), "--root", str(root),
            "--classes", str(root / "classes.txt"), "--out", str(out), "--videos", "2", "--seed", "4",
            "--target-class", "fight", "--quiet"]
    (tmp_path / "list.txt").write_text((root / "list.txt").read_text())
    proc = subprocess.run(args, capture_output=True, text=True)      # 5 noFight clips: 12 segments need 12
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "needs as many distinct" in proc.stderr
    lines = (root / "list.txt").read_text()
    for k in range(5, 12):               # copies: distinct files of the noFight pool
        shutil.copy(root / "noFight" / f"n{k % 5}.mp4", root / "noFight" / f"m{k}.mp4")
        lines += f"noFight/m{k}.mp4 0\n"
    (tmp_path / "list.txt").write_text(lines)
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "2 composites (1 positive)" in proc.stdout
    for name in ("list.txt", "classes.txt", "truth.json", "compose.json"):
        assert (out / name).is_file()
    assert len(read_truth(out / "truth.json")) == 2 and len(list((out / "videos").glob("*.mp4"))) == 2
