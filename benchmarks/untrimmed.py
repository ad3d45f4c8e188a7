"""Untrimmed composites of real footage: the benchmark where choosing frames matters (issue 27).

Composites (data/compose.py) of the Surveillance Camera Fight clips: 6-12 whole clips per
video, 1-2 of them ``fight`` in a positive, none in a negative; the train composites use
only the train list's clips, the test composites only the test list's.

    # compose only: DIR/videos/, DIR/list.txt, DIR/classes.txt, DIR/truth.json, DIR/compose.json
    python benchmarks/untrimmed.py --compose-only --list LIST --root ROOT --classes FILE --out DIR \\
        [--videos N] [--seed S] [--target-class NAME]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from data.compose import ComposeConfig, compose, summary
from data.progress import show_progress

FIGHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compose-only", action="store_true", help="write the composites of --list and stop")
    ap.add_argument("--list", help="--compose-only: the labelled list of trimmed source clips")
    ap.add_argument("--root", default=str(FIGHT), help="the folder the list's paths are relative to")
    ap.add_argument("--classes", default=None, help="the source classes, one a line (0-based)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--videos", type=int, default=None, help="composites to write (--compose-only: 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-class", default="fight")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def compose_only(args) -> dict:
    """Compose --videos composites of --list into --out; print one line about them."""
    if not args.list:
        raise SystemExit("--compose-only needs --list LIST")
    cfg = ComposeConfig(videos=args.videos or 40, seed=args.seed, target_class=args.target_class)
    t0 = time.perf_counter()
    record = compose(args.list, args.root, args.out, cfg, classes=args.classes, progress=show_progress(args.quiet))
    print(f"{args.out}: {summary(record)} ({time.perf_counter() - t0:.1f} s)")
    return record


def main(argv=None):
    args = parse(argv)
    if args.compose_only:
        compose_only(args)
        return
    raise SystemExit("give --compose-only (the benchmark run comes with --quick or the full settings)")


if __name__ == "__main__":
    main()
