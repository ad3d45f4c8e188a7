"""``framesel import`` and ``framesel export``: features from and to the files other tools
write (data/interchange.py, data/export.py), and an agent released as safetensors + JSON.
Thin commands, added to the ``framesel`` group by ``pipeline.cli``; each imports its library
when it runs."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.edge import command_line, domain_errors, quiet_option


def _gflops(ctx, param, values):
    out = []
    for v in values:
        stream, sep, number = v.partition("=")
        try:
            out.append((stream, float(number)))
        except ValueError:
            raise click.BadParameter(f"{v!r}: expected STREAM=GFLOPS, e.g. rgb=17.6") from None
        if not sep or not stream:
            raise click.BadParameter(f"{v!r}: expected STREAM=GFLOPS, e.g. rgb=17.6")
    return tuple(out)


@click.command("import")
@click.argument("source", metavar="SRC", type=click.Path(exists=True))
@click.option("--list", "list_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The videos, as for extract (their paths name the feature files).")
@click.option("--classes", "classes_file", type=click.Path(exists=True, dir_okay=False),
              help="Class names, one a line (0-based).")
@click.option("--list-format", default="auto", show_default=True,
              type=click.Choice(["auto", "mmaction2", "ucf101", "folder"]))
@click.option("--out", required=True, type=click.Path(), help="The new store: DIR.zarr or FILE.h5.")
@click.option("--format", "fmt", type=click.Choice(["zarr", "hdf5"]), default=None,
              help="Store format (default: from the suffix of --out).")
@click.option("--frames", type=click.IntRange(min=1), default=None,
              help="T rows per video at TSN's segment centres (videos may have different N); default: "
                   "every row, all videos the same N.")
@click.option("--streams", default="rgb", show_default=True, metavar="STREAM[=KEY],...",
              help="Streams to import and the key each has in SRC (video_features' <stem>_<KEY>.npy, an "
                   "npz array, an HDF5 group member), e.g. rgb=clip.")
@click.option("--gflops-per-frame", "gflops", multiple=True, callback=_gflops, metavar="STREAM=G",
              help="GFLOPs per frame of the backbone that made a stream (for the report's compute).")
@quiet_option
@domain_errors
def import_command(source, list_path, classes_file, list_format, out, fmt, frames, streams, gflops, quiet):
    """Build a store from precomputed per-frame features in SRC: a folder of .npy/.npz files
    (one per video, named by the list's paths or stems), or one .h5/.safetensors file keyed
    by video."""
    from data.interchange import ImportConfig, import_features, parse_streams

    cfg = ImportConfig(source=source, list_path=list_path, out=out, classes_file=classes_file,
                       list_format=list_format, frames=frames, streams=parse_streams(streams), gflops=gflops,
                       format=fmt, quiet=quiet, command=command_line())
    summary = import_features(cfg)
    click.echo(summary.text(), err=not summary.ok)
    if not summary.ok:
        sys.exit(1)


@click.command("export")
@click.argument("source", metavar="STORE|AGENT.pt", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(),
              help="Folder of per-video files (a store), or AGENT.safetensors (an agent checkpoint).")
@click.option("--format", "fmt", type=click.Choice(["npy", "npz"]), default="npy", show_default=True,
              help="npy: <name>_<stream>.npy per video and stream (video_features' naming); npz: <name>.npz.")
@click.option("--names", type=click.Choice(["path", "stem"]), default=None,
              help="Name files by the list path without its extension, or by its stem (default: path, or "
                   "how an imported store's files were named).")
@quiet_option
@domain_errors
def export_command(source, out, fmt, names, quiet):
    """Write a store's per-video features as files other tools read (and its trained heads as
    safetensors + JSON); or an agent checkpoint as safetensors + JSON."""
    if Path(source).suffix == ".pt":
        from agents.checkpoint import read_checkpoint, write_safetensors

        if Path(out).suffix != ".safetensors":
            raise click.UsageError(f"--out {out}: an agent is exported to a .safetensors file")
        write_safetensors(read_checkpoint(source), out)
        click.echo(f"{out}: agent weights (safetensors) and its config, store identity and history (JSON)")
        return
    from data.export import export_store

    click.echo(export_store(source, out, fmt=fmt, names=names, quiet=quiet).text())
