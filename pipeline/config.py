"""Parsed ``framesel extract`` options → ExtractConfig; shared by `extract` and `submit`."""
from __future__ import annotations

import json
from typing import Mapping

import click
from click.core import ParameterSource

from extract.run import ExtractConfig


def parse_assignments(items, option: str, *, underscores: bool = False) -> tuple[tuple[str, object], ...]:
    """``("epsilon=0.05", ...)`` -> (("epsilon", 0.05), ...): values as JSON where they parse,
    else strings; ``underscores`` turns dashes in names into underscores. A malformed item is
    a usage error of ``option``."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint=option)
        if underscores:
            name = name.replace("-", "_")
        try:
            out.append((name, json.loads(value)))
        except json.JSONDecodeError:
            out.append((name, value))
    return tuple(out)


def given_root(p: Mapping) -> str | None:
    """``--root`` as the user gave it, or None when it was not given (its default "."
    stands in): list paths are then relative to the working directory and may be absolute,
    while with a --root they must lie under it (data.lists)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.get_parameter_source("root") is ParameterSource.DEFAULT:
        return None
    return p.get("root")


def extract_config(p: Mapping, command: str = "") -> ExtractConfig:
    """Build the config from the extract command's parsed parameters. ``--flow auto`` is
    resolved here, once, so every shard and the store record the algorithm that ran; without
    ``--flow`` it is ``tvl1`` on the CPU and ``auto`` with ``--device cuda`` (said on stderr)."""
    from extract.flow import FlowConfig, auto_algorithm, choose_tvl1, opencv_cuda_tvl1
    from extract.video import VideoSettings

    algo = p["flow_algo"]
    if algo is None:        # not given: OpenCV's CPU TV-L1, but on a GPU the GPU's (issue 31)
        algo = "auto" if p["device"] == "cuda" else "tvl1"
        if algo == "auto" and not p.get("quiet"):
            click.echo(f"--device cuda: --flow defaults to auto -> "
                       f"{choose_tvl1(opencv_cuda_tvl1(), True)} (give --flow tvl1 for OpenCV's CPU TV-L1)",
                       err=True)
    if algo == "auto":
        # --device cuda says the workers have a GPU even when this host (a login node) has none
        algo = choose_tvl1(opencv_cuda_tvl1(), True) if p["device"] == "cuda" else auto_algorithm()
    flow = None if algo == "none" else FlowConfig(algorithm=algo, quantize=p["quantize_flow"],
                                                  params=parse_assignments(p["flow_param"], "--flow-param"))
    settings = VideoSettings(frames=p["frames"], flow_stack=p["flow_stack"], crops=int(p["crops"]),
                             streams=tuple(s.strip() for s in p["streams"].split(",") if s.strip()),
                             backbone=p["backbone"][0], stream_backbones=p["backbone"][1],
                             checkpoints=p["checkpoint"], preset=p.get("preset"), flow=flow,
                             feature_maps=p["feature_maps"],
                             thumbnail_size=(48, 64) if p["thumbnails"] else None, batch_size=p["batch_size"])
    return ExtractConfig(list_path=p["list_path"], out=p["out"], root=given_root(p), list_format=p["list_format"],
                         classes_file=p["classes_file"], hmdb51=(p["hmdb51_split"], p["hmdb51_subset"]),
                         format=p["fmt"], settings=settings, shard=p.get("shard", (1, 1)), workers=p["workers"],
                         pipeline=p.get("pipeline"), device=p["device"], retry_failed=p["retry_failed"], quiet=p["quiet"], command=command)
