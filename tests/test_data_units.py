"""The floor's small units, in this process: JSON values (data/jsonable.py), lock files
(data/lock.py) and room on disk (data/space.py). Their end-to-end paths run in subprocesses
elsewhere (tests/test_extract_run.py's second process, tests/test_durability.py's full
disks); here each branch is checked where it is decided."""
import errno
import json
import math
import resource
import signal
from pathlib import Path

import numpy as np
import pytest

from data.errors import StoreError
from data.jsonable import attr_value, plain
from data.lock import exclusive, lock_file
from data.space import ensure_room, file_size_limit, is_full, reserve, short_error, write_error


# -- data/jsonable.py --------------------------------------------------------------------------
def test_attr_value_makes_numpy_tuples_and_paths_json_and_refuses_objects():
    doc = {"n": np.int64(3), "x": np.float32(0.5), "a": np.arange(2), "t": (1, 2), "p": Path("/a/b")}
    assert json.loads(json.dumps(doc, default=attr_value)) == {"n": 3, "x": 0.5, "a": [0, 1], "t": [1, 2],
                                                               "p": "/a/b"}
    with pytest.raises(TypeError, match="cannot record object in store attributes"):
        json.dumps({"o": object()}, default=attr_value)


def test_plain_is_what_strict_json_writes():
    x = {1: (np.float64(2.5), np.array([1, 2])), "p": Path("r"), "bad": [math.nan, -math.inf, np.float32(math.inf)]}
    out = plain(x)
    assert out == {"1": [2.5, [1, 2]], "p": "r", "bad": [None, None, None]}
    json.dumps(out, allow_nan=False)


# -- data/lock.py ------------------------------------------------------------------------------
def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    path = lock_file(tmp_path / "store.zarr", ".shard-1")
    assert path == tmp_path / ".store.zarr.shard-1.lock"
    with exclusive(path, beside="--out store.zarr", busy=lambda holder, p: f"busy: {holder} holds {p.name}"):
        assert path.read_text().startswith("pid ")
        # flock locks belong to an open file description: a second open in this process is refused too
        with pytest.raises(StoreError, match=r"busy: pid \d+ on .* since .* holds \.store\.zarr\.shard-1\.lock"):
            with exclusive(path, beside="--out store.zarr", busy=lambda holder, p: f"busy: {holder} holds {p.name}"):
                pass
    assert not path.exists()                 # released and removed
    with exclusive(path, beside="x", busy=lambda h, p: "busy"):   # and free again
        pass


def test_a_lock_file_that_cannot_be_made_names_it(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / ".x.lock"
    with pytest.raises(StoreError, match=f"cannot write the lock file {path} beside --out x"):
        with exclusive(path, beside="--out x", busy=lambda h, p: "busy"):
            pass


# -- data/space.py -----------------------------------------------------------------------------
class _Store:
    """What ensure_room reads of a store: its path, the file growth of the rows, the reservation."""

    def __init__(self, path: Path, growth: int = 0, reserve_error: OSError | None = None):
        self.path, self.growth, self.reserve_error, self.reserved = path, growth, reserve_error, 0

    def _file_growth(self, rows):
        return self.growth

    def _reserve(self, nbytes):
        if self.reserve_error:
            raise self.reserve_error
        self.reserved = nbytes


@pytest.fixture
def file_limit():
    """Lower ``ulimit -f`` (soft) in this process for the test, restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, old)


def test_room_is_reserved_when_there_is_some(tmp_path):
    store = _Store(tmp_path)
    ensure_room(store, {"x": np.zeros(10, np.float32)}, "writing video 0", "resume")
    assert store.reserved == 40 + (1 << 20)


def test_a_file_size_limit_is_named_before_the_write(tmp_path, file_limit):
    assert file_size_limit() == file_limit
    store = _Store(tmp_path, growth=2 * file_limit)
    with pytest.raises(StoreError, match=r"disk full writing video 3 to s\.h5: .* over the file size limit "
                                         r"\(ulimit -f\) of .* MiB; make room and run again"):
        ensure_room(store, {"x": np.zeros(4)}, "writing video 3 to s.h5", "run again")
    assert store.reserved == 0


def test_a_reservation_the_disk_refuses_is_a_full_disk(tmp_path):
    store = _Store(tmp_path, reserve_error=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(StoreError, match=r"disk full writing video 1: .* No space left on device \(errno 28\); "
                                         "make room and resume"):
        ensure_room(store, {"x": np.zeros(4)}, "writing video 1", "resume")


def test_reserve_allocates_past_the_end_and_refuses_what_no_disk_has(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    reserve(f, 1 << 16)
    assert f.stat().st_size == 3             # the size is kept; only blocks are allocated
    with pytest.raises(OSError) as err:      # 1 EiB: no disk has it (or no file may be that large)
        reserve(f, 1 << 60)
    assert is_full(err.value) and str(f) in str(err.value)


def test_write_errors_in_one_line():
    assert write_error(OSError(errno.ENOSPC, "x"), "writing video 2") == \
        "disk full writing video 2: No space left on device (errno 28)"
    assert write_error(OSError(errno.EROFS, "x"), "writing s") == "error writing s: Read-only file system (errno 30)"
    assert is_full(RuntimeError("Can't write data (No space left on device)"))
    assert short_error(RuntimeError("first line\nsecond")) == "first line" and short_error(RuntimeError()) == "RuntimeError"
