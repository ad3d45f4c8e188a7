"""One process per (store, shard): :func:`data.lock.exclusive` on a lock file beside the store.

Two processes on one shard would both do all of its work (each skips only what is DONE when
it looks), so the second stops at once, naming the holder. Different shards of one Zarr
store lock different files and run together.
"""
from __future__ import annotations

from pathlib import Path

from data.lock import exclusive, lock_file


def lock_path(store: Path, shard: tuple[int, int]) -> Path:
    """``.<store name>.shard-K-of-N.lock`` beside the store (the store may not exist yet)."""
    k, n = shard
    return lock_file(Path(store), f".shard-{k}-of-{n}")


def shard_lock(store: Path, shard: tuple[int, int]):
    """Hold shard ``(k, n)`` of ``store`` for the ``with`` block; StoreError if another
    process holds it. Creates the store's parent directory if needed."""
    k, n = shard

    def busy(holder: str, path: Path) -> str:
        return (f"{store}: shard {k}/{n} is being extracted by {holder} (lock {path}); "
                "a second process would redo its work: wait for it or stop it")
    return exclusive(lock_path(Path(store), shard), beside=f"--out {store}", busy=busy)
