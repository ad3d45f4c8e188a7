"""Video list and split parsers on the real UCF101 / fight lists and generated HMDB51 files."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from data.errors import InputError, UnknownNameError
from data.lists import (VideoList, available_formats, read_hmdb51_split, read_list,
                        register_format, subset, write_list)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
UCF = SHARED / "ucf101"
FIGHT = SHARED / "fight"
HMDB_SCORES = SHARED / "scores" / "hmdb51"


def need(path: Path):
    if not path.exists():
        pytest.skip(f"real data {path} is absent (../shared/data is not part of a fresh clone)")


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


# ----------------------------------------------------------------------------- UCF101 (real)

def test_ucf101_real_class_ind_and_train_list():
    need(UCF)
    vl = read_list(UCF / "trainlist01.txt")
    assert vl.source.startswith("ucf101:")
    assert vl.num_classes == 101 and vl.classes[0] == "ApplyEyeMakeup" and vl.classes[100] == "YoYo"
    assert len(vl) == 9537 and not vl.multilabel and vl.labels.dtype == np.int32
    assert vl.labels.min() == 0 and vl.labels.max() == 100  # 1-based in the file, 0-based here
    folders = [p.split("/")[0] for p in vl.paths]
    assert all(vl.classes[lab] == f for lab, f in zip(vl.labels, folders))
    want = hashlib.sha256((UCF / "trainlist01.txt").read_bytes() + (UCF / "classInd.txt").read_bytes())
    assert vl.sha256 == want.hexdigest()


def test_ucf101_real_test_list_labels_from_folders():
    need(UCF)
    train = read_list(UCF / "trainlist01.txt")
    test = read_list(UCF / "testlist01.txt")
    assert len(test) == 3783 and test.classes == train.classes
    assert set(test.labels.tolist()) == set(range(101))
    assert not set(test.paths) & set(train.paths)
    hsp = train.classes.index("HandstandPushups")
    for vl in (train, test):
        idx = [i for i, p in enumerate(vl.paths) if "v_HandStandPushups_" in p]
        assert idx and (vl.labels[idx] == hsp).all()
    # the same class convention in both lists: the class of a folder is one index
    by_folder = dict(zip((p.split("/")[0] for p in train.paths), train.labels.tolist()))
    assert all(by_folder[p.split("/")[0]] == lab for p, lab in zip(test.paths, test.labels))


def test_ucf101_crlf_copy_equals_original(tmp_path):
    need(UCF)
    # the shared copies have LF endings; the original distribution has CRLF
    for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt"):
        write(tmp_path / name, (UCF / name).read_text(), "\r\n")
    for name in ("trainlist01.txt", "testlist01.txt"):
        a, b = read_list(UCF / name), read_list(tmp_path / name)
        assert a == b and all("\r" not in p for p in b.paths) and a.sha256 != b.sha256


def test_ucf101_flat_paths_and_file_name_case(tmp_path):
    write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n")
    write(tmp_path / "testlist09.txt", "v_HandStandPushups_g01_c01.avi\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    vl = read_list(tmp_path / "testlist09.txt")
    assert vl.labels.tolist() == [1, 0]


@pytest.mark.parametrize("line, msg", [
    ("ApplyEyeMakeup/a.avi 3", r"out of range \[1, 2\]"),
    ("ApplyEyeMakeup/a.avi 0", "out of range"),
    ("ApplyEyeMakeup/a.avi 2", "disagrees with the class folder"),
    ("Unknown/a.avi", "no known class"),
    ("ApplyEyeMakeup/a.avi x", "not an integer"),
    ("ApplyEyeMakeup/a.avi 1 1", r"expected 'path \[label\]'"),
])
def test_ucf101_errors_name_file_and_line(tmp_path, line, msg):
    write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n")
    f = write(tmp_path / "trainlist01.txt", f"HandstandPushups/v_HandStandPushups_g01_c01.avi 2\n\n{line}\n", "\r\n")
    with pytest.raises(InputError, match=f"trainlist01.txt:3: .*{msg}"):
        read_list(f)


def test_ucf101_bad_class_ind(tmp_path):
    write(tmp_path / "classInd.txt", "1 A\n3 B\n")
    write(tmp_path / "trainlist01.txt", "A/x.avi 1\n")
    with pytest.raises(InputError, match=r"classInd.txt:2: class index 3, expected 2"):
        read_list(tmp_path / "trainlist01.txt")


# ----------------------------------------------------------------------------- mmaction2

def test_fight_real_list_with_classes_file_and_root():
    need(FIGHT)
    vl = read_list(FIGHT / "train.txt", classes=FIGHT / "classes.txt", root=FIGHT)
    assert vl.source.startswith("mmaction2:") and vl.classes == ("noFight", "fight")
    assert len(vl) == 132 and vl.labels.dtype == np.int32 and set(vl.labels.tolist()) == {0, 1}
    assert all(("/fight/" in p) == bool(lab) for p, lab in zip(vl.paths, vl.labels))
    want = (FIGHT / "train.txt").read_bytes() + (FIGHT / "classes.txt").read_bytes()
    assert vl.sha256 == hashlib.sha256(want).hexdigest()
    bare = read_list(FIGHT / "train.txt")  # no classes file: generic names, plain file hash
    assert bare.classes == ("class_0", "class_1")
    assert bare.sha256 == hashlib.sha256((FIGHT / "train.txt").read_bytes()).hexdigest()
    with pytest.raises(InputError, match="do not exist under root"):
        read_list(FIGHT / "train.txt", root=FIGHT / "videos")


def test_mmaction2_multilabel_and_roundtrip(tmp_path):
    f = write(tmp_path / "ml.txt", "a.mp4 0 3\nb.mp4 2\nc.mp4\n  d.mp4   1 2 3   \n")
    vl = read_list(f, classes=["w", "x", "y", "z"])
    assert vl.multilabel and vl.labels.dtype == np.uint8 and vl.labels.shape == (4, 4)
    assert vl.labels.tolist() == [[1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]]
    write_list(tmp_path / "out.txt", vl, classes_path=tmp_path / "cls.txt")
    back = read_list(tmp_path / "out.txt", classes=tmp_path / "cls.txt", multilabel=True)
    assert back == vl
    forced = read_list(write(tmp_path / "one.txt", "a.mp4 1\nb.mp4\n"), multilabel=True)
    assert forced.labels.tolist() == [[0, 1], [0, 0]]


def test_mmaction2_single_label_roundtrip_and_unlabelled(tmp_path):
    vl = read_list(write(tmp_path / "l.txt", "x/a.mp4 2\nx/b.mp4 0\n", "\r\n"))
    assert vl.labels.tolist() == [2, 0] and vl.classes == ("class_0", "class_1", "class_2")
    write_list(tmp_path / "o.txt", vl)
    assert read_list(tmp_path / "o.txt") == vl
    un = read_list(write(tmp_path / "u.txt", "a.mp4\nb.mp4\n"))
    assert un.labels.tolist() == [-1, -1] and un.classes == ()


@pytest.mark.parametrize("text, msg", [
    ("a.mp4 1\nb.mp4 1\na.mp4 0\n", r"l.txt:3: duplicate path 'a.mp4' \(first at .*l.txt:1\)"),
    ("a.mp4 1\nb.mp4 -1\n", r"l.txt:2: label -1 out of range"),
    ("a.mp4 1\nb.mp4 2\n", r"l.txt:2: label 2 out of range \[0, 1\]"),
    ("a.mp4 1\nb.mp4 1.0\n", r"l.txt:2: label '1.0' is not an integer"),
    ("a.mp4 1\n\nb.mp4\n", r"l.txt:3: some lines carry a label"),
    ("a.mp4 0 1 1\n", r"l.txt:1: a label is repeated"),
    ("\n  \n", r"the list is empty"),
])
def test_mmaction2_errors(tmp_path, text, msg):
    f = write(tmp_path / "l.txt", text)
    with pytest.raises(InputError, match=msg):
        read_list(f, classes=["neg", "pos"])


def test_mmaction2_paths_with_spaces(tmp_path):
    """Issue 10: a path with spaces gave "label 'clip.mp4' is not an integer"; the labels are
    the trailing integer tokens, the path is the rest as written."""
    one = read_list(write(tmp_path / "s.txt", "my clip.mp4 1\nsub dir/two  spaces.mp4 0\nplain.mp4 1\n"))
    assert one.paths == ("my clip.mp4", "sub dir/two  spaces.mp4", "plain.mp4")
    assert not one.multilabel and one.labels.tolist() == [1, 0, 1]
    multi = read_list(write(tmp_path / "m.txt", "my clip.mp4 0 2\nother one.avi 1\n"))
    assert multi.multilabel and multi.paths == ("my clip.mp4", "other one.avi")
    assert multi.labels.tolist() == [[1, 0, 1], [0, 1, 0]]
    # after a video file name, a token that is not an integer is a bad label, said as such
    with pytest.raises(InputError, match=r"b.txt:2: label 'x' is not an integer \(after the video 'b.mp4'"):
        read_list(write(tmp_path / "b.txt", "a.mp4 0\nb.mp4 1 x 2\n"))
    # a line whose path swallowed a bad label says how it was read
    with pytest.raises(InputError, match=r"c.txt:2: some lines carry a label and others do not "
                                         r"\(this line reads as path 'b 1.5' with no label"):
        read_list(write(tmp_path / "c.txt", "a 0\nb 1.5\n"))


@pytest.mark.parametrize("line", ["../outside.mp4 0", "a/../../etc/x.mp4 0", "a\\..\\x.mp4 0"])
def test_list_paths_may_not_climb_out_of_the_root(tmp_path, line):
    """Issue 10: a list could reach files beside the dataset with '..'."""
    f = write(tmp_path / "l.txt", f"ok.mp4 0\n{line}\n")
    path = line.split()[0]
    for root in (None, tmp_path):
        with pytest.raises(InputError, match=re.escape(f"l.txt:2: path {path!r} climbs out of the root with '..'")):
            read_list(f, root=root)


def test_absolute_list_paths_only_without_root(tmp_path):
    video = write(tmp_path / "v.mp4", "x")
    f = write(tmp_path / "l.txt", f"rel.mp4 0\n{video} 1\n")
    assert read_list(f).paths == ("rel.mp4", str(video))     # no root: paths stand for themselves
    with pytest.raises(InputError, match=rf"l.txt:2: path '{video}' is absolute but a root \({tmp_path}\) "
                                         r"was given: write it relative to the root"):
        read_list(f, root=tmp_path, require_exist=False)


def test_ucf101_and_hmdb51_paths_checked_too(tmp_path):
    write(tmp_path / "classInd.txt", "1 A\n")
    write(tmp_path / "trainlist01.txt", "A/x.avi 1\n../A/y.avi 1\n")
    with pytest.raises(InputError, match=r"trainlist01.txt:2: path '../A/y.avi' climbs out"):
        read_list(tmp_path / "trainlist01.txt")
    make_hmdb(tmp_path / "h", {"run": [("a.avi", 1), ("../b.avi", 1)]})
    with pytest.raises(InputError, match=r"run_test_split1.txt:2: path 'run/../b.avi' climbs out"):
        read_hmdb51_split(tmp_path / "h", split=1, subset="train")


def test_require_exist_false_keeps_missing_videos(tmp_path):
    write(tmp_path / "here.mp4", "x")
    f = write(tmp_path / "l.txt", "here.mp4 0\ngone.mp4 1\n")
    with pytest.raises(InputError, match="1 of 2 videos do not exist"):
        read_list(f, root=tmp_path)
    assert read_list(f, root=tmp_path, require_exist=False).paths == ("here.mp4", "gone.mp4")


def test_read_list_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no such list"):
        read_list(tmp_path / "missing.txt")
    f = write(tmp_path / "l.txt", "a.mp4 0\n")
    with pytest.raises(UnknownNameError, match="unknown list format 'csv'; available: folder, mmaction2, ucf101"):
        read_list(f, fmt="csv")
    with pytest.raises(KeyError):  # typed errors also subclass the builtin
        read_list(f, fmt="csv")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe a.mp4 0\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_list(tmp_path / "bin.txt")
    with pytest.raises(InputError, match="appears twice"):
        read_list(f, classes=["a", "a"])
    with pytest.raises(ValueError, match="already registered"):
        register_format("mmaction2")(lambda *a, **k: None)
    assert available_formats() == ("folder", "mmaction2", "ucf101")


def test_write_list_rejects_whitespace(tmp_path):
    vl = VideoList(("a b.mp4",), np.array([0]), ("c",), False, "x", "0")
    with pytest.raises(InputError, match="whitespace"):
        write_list(tmp_path / "o.txt", vl)


# ----------------------------------------------------------------------------- HMDB51

def make_hmdb(directory: Path, split_of_class: dict[str, list[tuple[str, int]]], k: int = 1):
    directory.mkdir(exist_ok=True)
    for cls, rows in split_of_class.items():
        # the distributed files end every line with a trailing space
        write(directory / f"{cls}_test_split{k}.txt", "".join(f"{n} {f} \n" for n, f in rows))


def test_hmdb51_generated_trailing_spaces(tmp_path):
    make_hmdb(tmp_path, {"walk": [("w1.avi", 1), ("w2.avi", 2), ("w3.avi", 0)],
                         "brush_hair": [("b1.avi", 2), ("b2.avi", 1)]})
    make_hmdb(tmp_path, {"walk": [("w1.avi", 2)], "brush_hair": [("b1.avi", 1)]}, k=2)
    train = read_hmdb51_split(tmp_path, split=1, subset="train")
    test = read_hmdb51_split(tmp_path, split=1, subset="test")
    assert train.classes == test.classes == ("brush_hair", "walk")
    assert train.paths == ("brush_hair/b2.avi", "walk/w1.avi") and train.labels.tolist() == [0, 1]
    assert test.paths == ("brush_hair/b1.avi", "walk/w2.avi") and test.labels.tolist() == [0, 1]
    assert read_hmdb51_split(tmp_path, split=2, subset="test").paths == ("walk/w1.avi",)
    files = sorted(tmp_path.glob("*_test_split1.txt"))
    assert train.sha256 == hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    with pytest.raises(InputError, match="HMDB51 split files"):
        read_list(tmp_path)


@pytest.mark.parametrize("rows, msg", [
    ([("a.avi", 3)], r"walk_test_split1.txt:2: split flag 3"),
    ([("a.avi", 1), ("a.avi", 1)], r"walk_test_split1.txt:3: duplicate path 'walk/a.avi' \(first at .*:2\)"),
    ([("a.avi", "x")], r"walk_test_split1.txt:2: split flag 'x' is not an integer"),
])
def test_hmdb51_errors(tmp_path, rows, msg):
    write(tmp_path / "walk_test_split1.txt", "z.avi 1 \n" + "".join(f"{n} {f} \n" for n, f in rows))
    with pytest.raises(InputError, match=msg):
        read_hmdb51_split(tmp_path, split=1)


def test_hmdb51_bad_arguments(tmp_path):
    make_hmdb(tmp_path, {"walk": [("w1.avi", 1)]})
    with pytest.raises(InputError, match="subset must be one of"):
        read_hmdb51_split(tmp_path, subset="val")
    with pytest.raises(InputError, match="no \\*_test_split3.txt"):
        read_hmdb51_split(tmp_path, split=3)
    with pytest.raises(InputError, match="split 1 test: the list is empty"):
        read_hmdb51_split(tmp_path, split=1, subset="test")


def test_hmdb51_class_order_matches_real_scores(tmp_path):
    """Split files rebuilt from the real split-1 test names give the labels the scores use."""
    need(HMDB_SCORES)
    with np.load(HMDB_SCORES / "iframe_split1.npz") as z:
        names, labels = z["names"].tolist(), z["labels"]
    rows: dict[str, list] = {}
    for n in names:
        cls, file = n.split("/")
        rows.setdefault(cls, []).append((file, 2))
    make_hmdb(tmp_path, rows)
    vl = read_hmdb51_split(tmp_path, split=1, subset="test")
    assert vl.num_classes == 51 and len(vl) == 1530 and list(vl.classes) == sorted(rows)
    # DMC-Net/CoViAR index HMDB51 classes in their own order, not sorted: pass it explicitly
    order = [""] * 51
    for n, lab in zip(names, labels.tolist()):
        order[lab] = n.split("/")[0]
    assert order != sorted(order)
    vl = read_hmdb51_split(tmp_path, split=1, subset="test", classes=order)
    assert vl.classes == tuple(order)
    got = dict(zip(vl.paths, vl.labels.tolist()))
    assert all(got[n] == lab for n, lab in zip(names, labels.tolist()))
    with pytest.raises(InputError, match=r"classes given \['walk'\] do not match"):
        read_hmdb51_split(tmp_path, split=1, subset="test", classes=[c for c in order if c != "walk"])


# ----------------------------------------------------------------------------- folders, subsets

def test_folder_real_fight_videos_agree_with_lists():
    need(FIGHT)
    vl = read_list(FIGHT / "videos", root=FIGHT, classes=FIGHT / "classes.txt")
    assert vl.source.startswith("folder:") and len(vl) == 194
    listed = {}
    for name in ("train.txt", "test.txt"):
        part = read_list(FIGHT / name, classes=FIGHT / "classes.txt")
        listed.update(zip(part.paths, part.labels.tolist()))
    assert dict(zip(vl.paths, vl.labels.tolist())) == listed
    plain = read_list(FIGHT / "videos")  # sorted folder names, paths relative to the folder
    assert plain.classes == ("fight", "noFight") and plain.paths[0].startswith("fight/")


def test_folder_generated(tmp_path):
    for rel in ("b/x.mp4", "b/sub/y.AVI", "a/z.mkv", "a/notes.txt", ".hidden/q.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    vl = read_list(tmp_path)
    assert vl.classes == ("a", "b") and vl.paths == ("a/z.mkv", "b/sub/y.AVI", "b/x.mp4")
    assert vl.labels.tolist() == [0, 1, 1]
    with pytest.raises(InputError, match=r"class folders \['b'\] are not among"):
        read_list(tmp_path, classes=["a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="the list is empty"):
        read_list(tmp_path / "empty")


def test_subset_and_immutability(tmp_path):
    vl = read_list(write(tmp_path / "l.txt", "a.mp4 0\nb.mp4 1\nc.mp4 2\n"))
    s = subset(vl, [2, 0])
    assert s.paths == ("c.mp4", "a.mp4") and s.labels.tolist() == [2, 0] and s.classes == vl.classes
    assert s.sha256 != vl.sha256 and subset(vl, [2, 0]).sha256 == s.sha256
    assert subset(vl, np.array([False, True, False])).paths == ("b.mp4",)
    with pytest.raises(InputError, match="repeat"):
        subset(vl, [1, 1])
    with pytest.raises(InputError, match="out of range"):
        subset(vl, [3])
    with pytest.raises(ValueError):
        vl.labels[0] = 5
    with pytest.raises(AttributeError):
        vl.paths = ()
    with pytest.raises(InputError, match="expected \\(2,\\)"):
        VideoList(("a", "b"), np.zeros(3), ("c",), False, "x", "0")
