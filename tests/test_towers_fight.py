"""A CLIP store of real fight clips, end to end (issue 29): ``extract --backbone clip_vit_b16
--checkpoint rgb=model.safetensors --streams rgb``, then ``head``, ``train`` and
``evaluate`` on it. No CLIP weights can be downloaded here, so the CLIP is a standard-size
ViT-B/16 with random weights, saved as the hub holds one (model.safetensors, config.json,
preprocessor_config.json): the test is of the pipeline, not of CLIP's accuracy."""
import json

import pytest
import transformers
from click.testing import CliRunner

from data.store import open_store
from pipeline.cli import main
from tests.conftest import shared_data
from tests.peer_checkpoints import save_tower

TORCH_THREADS = 2


def six_clips(root, folder):
    lines = [ln for ln in (root / "train.txt").read_text().splitlines() if ln.strip()]
    chosen = [ln for ln in lines if ln.endswith(" 1")][:3] + [ln for ln in lines if ln.endswith(" 0")][:3]
    (folder / "six.txt").write_text("\n".join(chosen) + "\n")
    return folder / "six.txt"


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.slow
def test_clip_store_of_fight_clips_through_head_train_evaluate(tmp_path):
    root = shared_data("fight")
    lst = six_clips(root, tmp_path)
    ck = save_tower("clip_vit_b16", tmp_path / "clip-vit-base-patch16")
    transformers.CLIPImageProcessorPil().save_pretrained(str(tmp_path / "clip-vit-base-patch16"))
    store = tmp_path / "clip.zarr"
    r = run("extract", lst, "--root", root, "--classes", root / "classes.txt", "--out", store,
            "--backbone", "clip_vit_b16", "--checkpoint", f"rgb={ck}/model.safetensors", "--streams", "rgb",
            "--flow", "none", "--frames", "4", "--crops", "1", "--quiet")
    assert "6/6 done" in r.output and "clip_vit_b16:model" in r.output
    with open_store(store) as s:
        d = s.attrs["backbone"]["rgb"]
        assert d["feature_dim"] == 512 and d["resize"]["to"] == [297, 224] and not d["logits_stored"]
        assert s.read("rgb/features", 0).shape == (4, 1, 512)
    run("check", store)
    run("head", store, "--train", lst, "--epochs", "20", "--quiet")
    run("train", store, "--agent", "as", "--train", lst, "--out", tmp_path / "as.pt", "--seeds", "1", "--set", "epochs=2",
        "--set", "m=2", "--set", "hidden=8", "--set", "batch_size=4", "--quiet")
    run("evaluate", store, "--test", lst, "--agents", tmp_path / "as.pt", "--out", tmp_path / "report",
        "--m", "1,2,4", "--quiet")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert {"as", "uniform", "oracle"} <= {row["method"] for row in results["rows"]}
    assert (tmp_path / "report" / "report.html").exists()
