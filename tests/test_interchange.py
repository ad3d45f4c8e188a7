"""framesel import / export (issue 29): precomputed per-frame features in the forms other
tools write them become a store the light stage reads, and come back out as files."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from agents.base import load_agent
from data.errors import InputError
from data.interchange import ImportConfig, import_features
from data.store import open_store
from pipeline.cli import main

TORCH_THREADS = 1
CLASSES = ("fight", "noFight")


def write_list(root, n=8):
    """An mmaction2 list of ``n`` videos in two class folders, and the classes file."""
    paths = [f"videos/{CLASSES[i % 2]}/{'fi' if i % 2 == 0 else 'nofi'}{i:03d}.mp4" for i in range(n)]
    (root / "list.txt").write_text("".join(f"{p} {i % 2}\n" for i, p in enumerate(paths)))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return paths


def stem(p):
    return p.rsplit("/", 1)[1].rsplit(".", 1)[0]


def video_features(root, paths, n=6, d=16, seed=0):
    """v-iashin/video_features' output: <stem>_clip.npy, N x D float16, in one folder; the
    class shows in the first feature."""
    g = np.random.default_rng(seed)
    (root / "feats").mkdir()
    for i, p in enumerate(paths):
        x = g.normal(0, 1, (n, d)).astype(np.float16)
        x[:, 0] += np.float16(3.0 * (i % 2))
        np.save(root / "feats" / f"{stem(p)}_clip.npy", x)
    return root / "feats"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_import_then_export_gives_a_video_features_folder_back_bit_for_bit(tmp_path):
    paths = write_list(tmp_path)
    src = video_features(tmp_path, paths)
    r = cli("import", src, "--list", tmp_path / "list.txt", "--classes", tmp_path / "classes.txt",
            "--out", tmp_path / "s.zarr", "--streams", "rgb=clip", "--quiet")
    assert r.exit_code == 0, r.output
    assert cli("check", tmp_path / "s.zarr").exit_code == 0
    info = cli("info", tmp_path / "s.zarr")
    assert info.exit_code == 0 and "imported:clip" in info.output and "GFLOPs/frame unknown" in info.output
    with open_store(tmp_path / "s.zarr") as s:
        assert s.read("rgb/features", 3).shape == (6, 1, 16) and s.read("videos/num_frames", 3) == 6
        assert s.read("frame_index", 3).tolist() == list(range(6)) and not s.has("motion")
        assert len(s.attrs["import"]["sha256"]) == 64 and s.attrs["backbone"]["rgb"]["sha256"] == s.attrs["import"]["sha256"]
    r = cli("export", tmp_path / "s.zarr", "--out", tmp_path / "back", "--quiet")
    assert r.exit_code == 0, r.output
    originals = sorted(p.name for p in src.iterdir())
    assert sorted(p.name for p in (tmp_path / "back").glob("*.npy")) == originals
    for name in originals:
        assert (tmp_path / "back" / name).read_bytes() == (src / name).read_bytes(), name
    manifest = json.loads((tmp_path / "back" / "framesel_export.json").read_text())
    assert manifest["videos"][1]["label"] == 1 and manifest["streams"]["rgb"] == {"key": "clip", "shape": [6, 16]}


def test_an_imported_store_goes_through_head_train_and_evaluate(tmp_path):
    paths = write_list(tmp_path, 12)
    src = video_features(tmp_path, paths, seed=1)
    store, lst = tmp_path / "s.h5", tmp_path / "list.txt"
    assert cli("import", src, "--list", lst, "--classes", tmp_path / "classes.txt", "--out", store,
               "--streams", "rgb=clip", "--quiet").exit_code == 0
    assert cli("head", store, "--train", lst, "--epochs", "5", "--quiet").exit_code == 0
    r = cli("train", store, "--agent", "as", "--train", lst, "--out", tmp_path / "as.pt", "--seeds", "1", "--set", "epochs=1",
            "--set", "m=2", "--set", "hidden=4", "--set", "batch_size=8", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("evaluate", store, "--test", lst, "--agents", tmp_path / "as.pt", "--out", tmp_path / "report",
            "--m", "2,6", "--quiet")
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    methods = {row["method"] for row in results["rows"]}
    assert "as" in methods and "uniform" in methods and "motion" not in methods
    assert "not counted" in results["meta"]["compute"]["note"]
    refused = CliRunner().invoke(main, ["evaluate", str(store), "--test", str(lst), "--baselines", "motion",
                                        "--out", str(tmp_path / "r2"), "--quiet"])
    assert refused.exit_code == 1 and "no `motion` node" in refused.output
    # heads and agents leave as safetensors + JSON
    assert cli("export", store, "--out", tmp_path / "out", "--format", "npz", "--names", "stem").exit_code == 0
    with np.load(tmp_path / "out" / f"{stem(paths[0])}.npz") as z:
        assert z["clip"].shape == (6, 16) and z["frame_index"].tolist() == list(range(6))
    assert (tmp_path / "out" / "heads" / "rgb.safetensors").exists()
    assert cli("export", tmp_path / "as.pt", "--out", tmp_path / "as.safetensors").exit_code == 0
    a, b = load_agent(tmp_path / "as.pt"), load_agent(tmp_path / "as.safetensors")
    assert a.config == b.config and a.history == b.history
    for (k, v), (k2, v2) in zip(a.module.state_dict().items(), b.module.state_dict().items()):
        assert k == k2 and v.equal(v2)


def test_frames_samples_segment_centres_and_bad_videos_fail_with_their_cause(tmp_path):
    paths = write_list(tmp_path, 6)
    folder = tmp_path / "mirror"
    g = np.random.default_rng(2)
    rows = {0: (10, 8), 1: (7, 8), 2: (3, 8), 3: (9, 5), 5: (12, 3, 8)}     # video 4: no file
    for i, shape in rows.items():
        (folder / paths[i]).parent.mkdir(parents=True, exist_ok=True)
        np.save(folder / paths[i].replace(".mp4", ".npy"), g.normal(0, 1, shape).astype(np.float32))
    cfg = ImportConfig(source=str(folder), list_path=str(tmp_path / "list.txt"), out=str(tmp_path / "s.zarr"),
                       classes_file=str(tmp_path / "classes.txt"), frames=4, quiet=True)
    summary = import_features(cfg)
    failed = dict(summary.failures)
    assert summary.done == 2 and not summary.ok
    assert "3 rows, fewer than --frames 4" in failed[paths[2]]
    assert "5 features, the others 1 x 8" in failed[paths[3]] and "3 crops x 8 features" in failed[paths[5]]
    assert f"no features for {paths[4]}" in failed[paths[4]]
    with open_store(tmp_path / "s.zarr") as s:
        assert s.read("frame_index", 0).tolist() == [1, 3, 6, 8]          # TSN centres over 10 rows
        assert s.read("frame_index", 1).tolist() == [0, 2, 4, 6]
        assert s.read("videos/num_frames", 1) == 7 and s.status().tolist() == [1, 1, 2, 2, 2, 2]
        x = np.load(folder / paths[0].replace(".mp4", ".npy"))
        np.testing.assert_array_equal(s.read("rgb/features", 0)[:, 0], x[[1, 3, 6, 8]].astype(np.float16))
        assert "no features" in s.errors()[4]
    r = cli("import", folder, "--list", tmp_path / "list.txt", "--classes", tmp_path / "classes.txt",
            "--out", tmp_path / "all.zarr", "--quiet")
    assert r.exit_code == 1 and "pass --frames T" in r.output


@pytest.mark.parametrize("kind", ["npz", "hdf5", "safetensors"])
def test_named_streams_from_npz_hdf5_and_safetensors(kind, tmp_path):
    paths = write_list(tmp_path, 4)
    g = np.random.default_rng(3)
    data = {stem(p): {"rgb": g.normal(0, 1, (5, 12)).astype(np.float16),
                      "flow": g.normal(0, 1, (5, 10, 6)).astype(np.float16)} for p in paths}
    if kind == "npz":
        src = tmp_path / "npz"
        src.mkdir()
        for name, arrays in data.items():
            np.savez(src / f"{name}.npz", **arrays)
    elif kind == "hdf5":
        src = tmp_path / "feats.h5"
        with h5py.File(src, "w") as f:
            for name, arrays in data.items():
                for key, a in arrays.items():
                    f[f"{name}/{key}"] = a
    else:
        src = tmp_path / "feats.safetensors"
        save_file({f"{n}/{k}": a for n, arrays in data.items() for k, a in arrays.items()}, str(src))
    summary = import_features(ImportConfig(source=str(src), list_path=str(tmp_path / "list.txt"),
                                           out=str(tmp_path / "s.zarr"), classes_file=str(tmp_path / "classes.txt"),
                                           streams=(("rgb", "rgb"), ("flow", "flow")), gflops=(("rgb", 4.4),),
                                           quiet=True))
    assert summary.ok, summary.text()
    with open_store(tmp_path / "s.zarr") as s:
        assert s.streams == ["rgb", "flow"] and s.attrs["backbone"]["rgb"]["gflops_per_frame"] == 4.4
        np.testing.assert_array_equal(s.read("flow/features", 2), data[stem(paths[2])]["flow"])
        np.testing.assert_array_equal(s.read("rgb/features", 2)[:, 0], data[stem(paths[2])]["rgb"])


def test_import_refuses_what_it_cannot_read_before_writing(tmp_path):
    write_list(tmp_path, 2)
    base = dict(list_path=str(tmp_path / "list.txt"), out=str(tmp_path / "s.zarr"),
                classes_file=str(tmp_path / "classes.txt"), quiet=True)
    with pytest.raises(InputError, match="does not exist"):
        import_features(ImportConfig(source=str(tmp_path / "nothing"), **base))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video of .* could be read"):
        import_features(ImportConfig(source=str(tmp_path / "empty"), **base))
    assert not (tmp_path / "s.zarr").exists()
    np.save(tmp_path / "empty" / "fi000.npy", np.array([object()], dtype=object), allow_pickle=True)
    np.save(tmp_path / "empty" / "nofi001.npy", np.zeros((3, 4), np.float16))
    summary = import_features(ImportConfig(source=str(tmp_path / "empty"), **base))
    assert summary.done == 1 and "not a readable numpy file" in dict(summary.failures)["videos/fight/fi000.mp4"]


def test_gflops_per_frame_is_recorded_and_a_bad_one_is_refused(tmp_path):
    """``--gflops-per-frame STREAM=G``: what the features cost to compute, which evaluate
    then counts; malformed or naming a stream not imported, it is refused before writing."""
    paths = write_list(tmp_path, 4)
    src = video_features(tmp_path, paths)
    base = [src, "--list", tmp_path / "list.txt", "--classes", tmp_path / "classes.txt", "--streams", "rgb=clip",
            "--quiet"]
    r = cli("import", *base, "--out", tmp_path / "s.zarr", "--gflops-per-frame", "rgb=17.6")
    assert r.exit_code == 0, r.output
    with open_store(tmp_path / "s.zarr") as s:
        assert s.attrs["backbone"]["rgb"]["gflops_per_frame"] == 17.6
    for bad in ("rgb", "=3", "rgb=x"):
        r = CliRunner().invoke(main, ["import", *map(str, base), "--out", str(tmp_path / "b.zarr"),
                                      "--gflops-per-frame", bad])
        assert r.exit_code == 2 and f"{bad!r}: expected STREAM=GFLOPS, e.g. rgb=17.6" in r.output, r.output
    r = CliRunner().invoke(main, ["import", *map(str, base), "--out", str(tmp_path / "b.zarr"),
                                  "--gflops-per-frame", "flow=3"])
    assert r.exit_code == 1 and "--gflops-per-frame names streams not imported: flow" in r.output, r.output
    assert not (tmp_path / "b.zarr").exists()
