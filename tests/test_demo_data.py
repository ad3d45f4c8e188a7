"""The embedded demo dataset: determinism, real H.264 files, lists, where the action really is,
and that an ImageNet CNN separates the classes inside the action segment but is misled outside.
"""
import hashlib
import json
import subprocess
import time

import cv2
import numpy as np
import pytest

from data.demo import DemoConfig, demo_classes, make_demo_dataset, plan_video, register_class, render_video
from data.errors import InputError, UnknownNameError
from data.lists import read_list

# Small but complete: 4 classes x 6 videos (3 train, 3 test) x 24 frames.
SMALL = DemoConfig(videos_per_class=6, test_per_class=3, frames=24, seed=7)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    info = make_demo_dataset(root, SMALL)
    print(f"\n[demo] generated {info['num_videos']} videos in {time.perf_counter() - t0:.1f} s")
    truth = json.loads((root / "demo_truth.json").read_text())
    return root, info, truth


def decode_rgb(path, width=340, height=256) -> np.ndarray:
    """(N, H, W, 3) uint8: every frame, decoded by the imageio-ffmpeg binary (no scaling)."""
    import imageio_ffmpeg
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f",
                          "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    assert len(out) % (width * height * 3) == 0, "decoded bytes are not whole frames of the expected size"
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


# ----------------------------------------------------------------------------- config

def test_config_rejects_bad_input():
    with pytest.raises(UnknownNameError, match="demo class 'jump'"):
        DemoConfig(classes=("pan-left", "jump"))
    with pytest.raises(InputError):
        DemoConfig(classes=("rotate",))
    with pytest.raises(InputError):
        DemoConfig(action_fraction=(0.5, 0.2))
    with pytest.raises(InputError):
        DemoConfig(videos_per_class=4, test_per_class=4)
    with pytest.raises(InputError):
        DemoConfig(size=(341, 256))
    with pytest.raises(ValueError, match="already registered"):
        register_class("rotate", "sunburst")(lambda p, amp, sign: (0.0, 0.0, 1.0, 0.0))
    assert demo_classes()[:4] == ["pan-left", "pan-right", "zoom-in", "rotate"]


def test_out_dir_that_is_a_file_is_an_input_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        make_demo_dataset(tmp_path / "f", SMALL)


# ------------------------------------------------------------------------- determinism

def test_same_seed_same_frames_other_seed_other_frames(demo):
    _, _, truth = demo
    for rec in truth["videos"][::7]:
        label, k = rec["label"], int(rec["path"].rsplit("_", 1)[1][:3])
        frames = render_video(SMALL, plan_video(SMALL, label, k))
        assert hashlib.sha256(frames.tobytes()).hexdigest() == rec["frames_sha256"]
        other = DemoConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1})
        frames2 = render_video(other, plan_video(other, label, k))
        assert hashlib.sha256(frames2.tobytes()).hexdigest() != rec["frames_sha256"]
    hashes = [r["frames_sha256"] for r in truth["videos"]]
    assert len(set(hashes)) == len(hashes), "two videos rendered identically"


# ------------------------------------------------------------------------ files, lists

def test_files_decode_to_the_right_frames(demo):
    root, info, truth = demo
    assert info["num_videos"] == len(truth["videos"]) == 24
    assert info["num_frames"] == 24 * SMALL.frames
    for rec in truth["videos"][::3]:
        path = root / rec["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == rec["file_sha256"]
        decoded = decode_rgb(path)
        assert decoded.shape == (SMALL.frames, 256, 340, 3)
        raw = render_video(SMALL, plan_video(SMALL, *rec["seed"][1:]))
        mse = np.mean((decoded.astype(np.float64) - raw) ** 2)
        # H.264 CRF 18 in yuv420p: close to, but not exactly, the rendered frames
        assert 10 * np.log10(255**2 / mse) > 28


def test_lists_and_classes_are_consistent(demo):
    root, info, truth = demo
    classes = (root / "classes.txt").read_text().split()
    assert classes == list(SMALL.classes) == truth["classes"]
    train = read_list(root / "train.txt", classes=root / "classes.txt", root=root)
    test = read_list(root / "test.txt", classes=root / "classes.txt", root=root)
    assert (len(train), len(test)) == (info["num_train"], info["num_test"]) == (12, 12)
    assert not set(train.paths) & set(test.paths)
    by_path = {r["path"]: r for r in truth["videos"]}
    for vl, split in ((train, "train"), (test, "test")):
        assert np.bincount(vl.labels, minlength=4).tolist() == [len(vl) // 4] * 4
        for p, lab in zip(vl.paths, vl.labels):
            rec = by_path[p]
            assert (rec["label"], rec["split"]) == (lab, split)
            assert p.split("/")[1] == classes[lab] == rec["class"]
    assert truth["config"]["seed"] == SMALL.seed


def test_action_fraction_and_segments_cover_the_video(demo):
    _, _, truth = demo
    lo, hi = SMALL.action_fraction
    for rec in truth["videos"]:
        n = rec["action_end"] - rec["action_start"]
        assert round(lo * SMALL.frames) <= n <= round(hi * SMALL.frames)
        bounds = [(s["start"], s["end"]) for s in rec["segments"]]
        assert bounds[0][0] == 0 and bounds[-1][1] == SMALL.frames
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert [s["kind"] for s in rec["segments"]].count("action") == 1
    starts = {rec["action_start"] for rec in truth["videos"]}
    assert len(starts) > 6, "the action should sit at varied places"


# -------------------------------------------------------------- where the action really is

def _compensated_diffs(frames: np.ndarray, reach: int = 4) -> np.ndarray:
    """(N-1,) mean absolute difference of consecutive frames at half size, minimised over
    shifts of up to ``reach`` half-size px, so camera shake and pans do not count."""
    gray = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), None, fx=0.5, fy=0.5,
                       interpolation=cv2.INTER_AREA).astype(np.float32) for f in frames]
    h, w = gray[0].shape
    core = (slice(reach, h - reach), slice(reach, w - reach))
    out = []
    for a, b in zip(gray, gray[1:]):
        out.append(min(np.abs(a[core] - b[reach + dy:h - reach + dy, reach + dx:w - reach + dx]).mean()
                       for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)))
    return np.array(out)


def test_scene_cuts_are_exactly_at_the_segment_bounds(demo):
    """Motion-compensated frame differences of the decoded video spike at every cut, only there."""
    root, _, truth = demo
    for rec in truth["videos"][::2]:
        diff = _compensated_diffs(decode_rgb(root / rec["path"]))   # diff[i]: frame i -> i+1
        cuts = {s["start"] - 1 for s in rec["segments"][1:]}
        assert {rec["action_start"] - 1, rec["action_end"] - 1} - {-1, SMALL.frames - 1} <= cuts
        inside = [d for i, d in enumerate(diff) if i not in cuts]
        assert min(diff[sorted(cuts)], default=np.inf) > 2 * max(inside), rec["path"]


def _motion_signature(a: np.ndarray, b: np.ndarray, dis) -> tuple[float, float, float] | None:
    """Affine fit of DIS flow over moving pixels after removing the camera -> (tx, div, curl)."""
    f = dis.calc(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None)
    f = f - np.median(f.reshape(-1, 2), axis=0)             # camera shake and pan move everything
    moving = np.hypot(f[..., 0], f[..., 1]) > 1.5
    if moving.sum() < 300:
        return None
    ys, xs = np.nonzero(moving)
    design = np.column_stack([np.ones(len(xs)), xs - xs.mean(), ys - ys.mean()])
    coef, *_ = np.linalg.lstsq(design, f[moving], rcond=None)   # rows: t, d/dx, d/dy
    return coef[0, 0], coef[1, 0] + coef[2, 1], coef[1, 1] - coef[2, 0]


def _classify(sigs) -> str | None:
    """The demo class whose motion a segment's median signature shows, or None for no motion."""
    if not sigs:
        return None
    tx, div, curl = np.median(np.array(sigs), axis=0)
    if abs(tx) > 4:
        return "pan-left" if tx < 0 else "pan-right"
    if div > 0.1:
        return "zoom-in"
    return "rotate" if abs(curl) > 0.15 else None


def test_class_motion_is_in_the_action_segment_and_absent_elsewhere(demo):
    """Measured on the decoded H.264 frames with OpenCV's DIS flow, not read from the generator."""
    root, _, truth = demo
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    decoys = hits = 0
    for rec in truth["videos"]:
        frames = decode_rgb(root / rec["path"])
        for seg in rec["segments"]:
            sigs = [s for i in range(seg["start"], seg["end"] - 1)
                    if (s := _motion_signature(frames[i], frames[i + 1], dis)) is not None]
            seen = _classify(sigs)
            if seg["kind"] == "action":
                assert seen == rec["class"], (rec["path"], seg["start"], seen)
            else:
                assert seen != rec["class"], (rec["path"], seg["start"], seen)
                moves = [sp["motion"] for sp in seg["sprites"] if sp["motion"]]
                decoys += bool(moves)
                hits += bool(moves) and seen == moves[0]
    print(f"\n[demo] decoy segments showing their (wrong) class's motion: {hits}/{decoys}")
    assert hits >= 0.75 * decoys


# ------------------------------------------------------------------------- separability

def _features(root, truth, backbone, spec) -> tuple[np.ndarray, list[dict]]:
    """Centre-crop EfficientNet-Lite0 features of 3 in-action and 3 out-of-action frames/video."""
    import torch
    from extract.backbones import preprocess_rgb
    from extract.crops import crop_boxes, crop_frames
    crops, rows = [], []
    box = crop_boxes(340, 256, 224, 1)
    for rec in truth["videos"]:
        frames = decode_rgb(root / rec["path"])
        a0, a1 = rec["action_start"], rec["action_end"]
        outside = [i for i in range(len(frames)) if not a0 <= i < a1]
        picks = [(i, True) for i in np.linspace(a0, a1 - 1, 3).round().astype(int)]
        picks += [(outside[j], False) for j in np.linspace(0, len(outside) - 1, 3).round().astype(int)]
        for i, inside in picks:
            seg = next(s for s in rec["segments"] if s["start"] <= i < s["end"])
            looks = [sp["lookalike_of"] for sp in seg["sprites"] if "lookalike_of" in sp]
            rows.append({"label": rec["label"], "split": rec["split"], "inside": inside,
                         "lookalike": SMALL.classes.index(looks[0]) if looks else -1})
            crops.append(crop_frames(frames[i:i + 1], box, 224)[0, 0])
    with torch.no_grad():
        x = preprocess_rgb(np.stack(crops), spec)
        feats = torch.cat([backbone.forward_features(x[i:i + 16]) for i in range(0, len(x), 16)])
    return torch.nn.functional.normalize(feats, dim=1).numpy(), rows


def test_imagenet_features_separate_action_frames_and_are_misled_outside(demo):
    """Classifiers fitted on train videos' in-action frames, scored on the test videos' frames.

    Nearest class centroid (cosine) and a logistic regression, the latter standing in for the
    pipeline's linear head. Chance is 0.25.
    """
    from sklearn.linear_model import LogisticRegression

    from extract.backbones import create_backbone
    root, _, truth = demo
    backbone = create_backbone("efficientnet_lite0")
    feats, rows = _features(root, truth, backbone, backbone.spec)
    lab = np.array([r["label"] for r in rows])
    inside = np.array([r["inside"] for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    look = np.array([r["lookalike"] for r in rows])
    centroids = np.stack([feats[train & inside & (lab == c)].mean(0) for c in range(4)])
    near = (feats @ centroids.T).argmax(1)
    logreg = LogisticRegression(max_iter=2000).fit(feats[train & inside], lab[train & inside])
    linear = logreg.predict(feats)
    test_in, test_out = ~train & inside, ~train & ~inside
    has_look = test_out & (look >= 0)
    acc = {name: ((pred == lab)[test_in].mean(), (pred == lab)[test_out].mean(),
                  (pred == look)[has_look].mean()) for name, pred in (("centroid", near), ("logreg", linear))}
    for name, (a_in, a_out, a_look) in acc.items():
        print(f"\n[demo] {name}: top-1 in-action {a_in:.2f}, out-of-action {a_out:.2f}; "
              f"lookalike frames called the lookalike's class {a_look:.2f} (n={has_look.sum()})")
    assert acc["centroid"][0] >= 0.45 and acc["logreg"][0] >= 0.6
    for a_in, a_out, a_look in acc.values():
        assert a_out <= a_in - 0.25, "out-of-action frames should mislead"
        assert a_look >= 0.35, "a static lookalike should pull frames to its class"
