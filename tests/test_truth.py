"""Truth files (data/truth.py): validation with clear errors, key masks, per-position labels,
source-clip memberships."""
import json

import numpy as np
import pytest

from data.errors import InputError
from data.truth import key_mask, memberships, position_labels, read_truth

TRUTH = {
    "videos/c0.mp4": {"num_frames": 100, "segments": [
        {"source": "noFight/a.mp4", "class": "noFight", "start": 0, "end": 40},
        {"source": "fight/x.mp4", "class": "fight", "start": 40, "end": 60},
        {"source": "noFight/b.mp4", "class": "noFight", "start": 60, "end": 100}]},
    "videos/c1.mp4": {"num_frames": 50, "segments": [
        {"source": "noFight/a.mp4", "class": "noFight", "start": 0, "end": 30},
        {"source": "noFight/c.mp4", "class": "noFight", "start": 30, "end": 50}]},
}
PATHS = ["videos/c0.mp4", "videos/c1.mp4"]
CLASSES = ["not_fight", "fight"]


def _write(tmp_path, data, name="truth.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_key_mask_by_frame_index(tmp_path):
    truth = read_truth(_write(tmp_path, TRUTH))
    fi = np.array([[0, 39, 40, 59, 60], [0, 10, 29, 30, 49]])
    key = key_mask(truth, PATHS, [1, 0], CLASSES, fi, num_frames=[100, 50])
    assert key.tolist() == [[False, False, True, True, False], [False] * 5]     # end exclusive
    labels = position_labels(truth, PATHS, CLASSES, fi)
    assert labels.tolist() == [[0, 0, 1, 1, 0], [0] * 5]                         # noFight -> not_fight
    assert len(truth) == 2 and truth.sources() == ["fight/x.mp4", "noFight/a.mp4", "noFight/b.mp4", "noFight/c.mp4"]
    m, names = memberships(truth, PATHS)
    assert names == truth.sources() and m.tolist() == [[1, 1, 1, 0], [0, 1, 0, 1]]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["videos/c0.mp4"]["segments"][1].update(start=41), "frame 40 is in no segment"),
    (lambda d: d["videos/c0.mp4"]["segments"][1].update(start=39), "already in the one before"),
    (lambda d: d["videos/c0.mp4"].update(num_frames=120), "not at num_frames 120"),
    (lambda d: d["videos/c1.mp4"]["segments"][0].pop("class"), "needs the fields"),
    (lambda d: d["videos/c1.mp4"]["segments"][0].update(end=0), "must exceed start"),
    (lambda d: d["videos/c1.mp4"].update(num_frames="50"), "num_frames must be an integer"),
    (lambda d: d["videos/c1.mp4"].update(segments=[]), "at least one segment"),
])
def test_bad_truth_names_the_file_and_the_video(tmp_path, change, message):
    data = json.loads(json.dumps(TRUTH))
    change(data)
    p = _write(tmp_path, data)
    with pytest.raises(InputError, match=message) as err:
        read_truth(p)
    assert str(p) in str(err.value) and "videos/c" in str(err.value)


def test_truth_that_does_not_fit_the_store(tmp_path):
    truth = read_truth(_write(tmp_path, TRUTH))
    fi = np.zeros((2, 3), int)
    with pytest.raises(InputError, match="decoded: the truth is of other videos"):
        key_mask(truth, PATHS, [1, 0], CLASSES, fi, num_frames=[100, 51])
    with pytest.raises(InputError, match="outside its 50 frames"):
        key_mask(truth, PATHS, [1, 0], CLASSES, np.array([[0, 1, 2], [0, 50, 1]]))
    with pytest.raises(InputError, match="no entry for 1 of 3 videos, e.g. videos/c9.mp4"):
        key_mask(truth, PATHS + ["videos/c9.mp4"], [1, 0, 0], CLASSES, np.zeros((3, 3), int))
    for text, msg in (("[1, 2]", "non-empty object"), ("{", "not JSON")):
        with pytest.raises(InputError, match=msg):
            read_truth(_write(tmp_path, text, "bad.json"))
    with pytest.raises(InputError, match="background|not_<x>"):
        position_labels(truth, PATHS, ["calm", "fight"], np.zeros((2, 3), int))
