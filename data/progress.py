"""When long work shows progress: one rule for every command."""
from __future__ import annotations

import os


def show_progress(quiet: bool = False) -> bool:
    """True unless ``--quiet`` was given or the CI environment variable is set (CI logs
    are read after the fact; a redrawn bar only fills them)."""
    return not (quiet or os.environ.get("CI"))
