"""The CLI's edge, shared by every command module (``pipeline.cli``, ``pipeline.cli_files``):
the command line as typed, framesel's errors turned into one-line click errors, and the
options spelled the same everywhere. Imports only click, the standard library and
``data.errors`` (``framesel info`` must not pay for torch)."""
from __future__ import annotations

import errno
import os
import shlex
import sys
from functools import wraps
from pathlib import Path

import click

from data.errors import FrameselError


def command_line() -> str:
    return "framesel " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def domain_errors(fn):
    """Turn framesel's typed errors, the file system's (OSError: permission, full disk, a path
    beneath a regular file) and running out of memory into a clean one-line error and exit
    code 1. Anything else is a bug and keeps its traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FrameselError as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:
            raise click.ClickException(os_error_line(err)) from err
        except MemoryError as err:
            raise click.ClickException(
                "out of memory" + (" with --load memory: --load stream (or auto) reads the list's states a "
                                   "mini-batch at a time" if kwargs.get("load") == "memory" else
                                   " (the light stage's --load stream reads a list's states a mini-batch at "
                                   "a time)")) from err
    return wrapper


def os_error_line(err: OSError) -> str:
    """'PATH: cause' of a file-system error (both paths of a rename or copy). A directory
    wanted where a regular file is (EEXIST, ENOTDIR) names that file."""
    cause = err.strerror or str(err) or type(err).__name__
    names = [os.fsdecode(n) for n in (err.filename, err.filename2) if n is not None]
    if not names:
        return cause
    if err.errno in (errno.EEXIST, errno.ENOTDIR) and len(names) == 1:
        blocker = next((p for p in (Path(names[0]), *Path(names[0]).parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            cause = f"{blocker} is a file, not a directory" if str(blocker) != names[0] else \
                "exists and is not a directory"
    return f"{' -> '.join(names)}: {cause}"


# One spelling for every command that shows progress (extract, head, train, evaluate, demo;
# submit passes it on to its tasks with the other extract options).
quiet_option = click.option("--quiet", is_flag=True,
                            help="No progress bars (they are off too when the CI environment variable is set).")
# One spelling for the light stage's choice of where a list's states live (data/store_rows.py).
load_option = click.option("--load", default="auto", show_default=True,
                           type=click.Choice(["auto", "memory", "stream"]),
                           help="Hold the list's states in memory, or stream them from the store a "
                                "mini-batch at a time (auto: stream when they would take over a quarter "
                                "of the memory this process may use). Same results either way.")


def light_device(ctx, param, value):
    """--device of head, train and evaluate: cuda needs a GPU torch can see, here."""
    if value == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise click.BadParameter(f"cuda: torch {torch.__version__} sees no CUDA device on this machine "
                                     f"(built for CUDA: {torch.version.cuda or 'no'}); use --device cpu")
    return value


def device_option(help_text: str):
    return click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
                        callback=light_device, help=help_text)


def shard_option(ctx, param, value):
    """--shard K/N of extract and submit: (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter("expected K/N, e.g. 3/10") from None
    if not 1 <= k <= n:
        raise click.BadParameter("K must be between 1 and N")
    return k, n
