"""The ``framesel predict`` command (its logic: :mod:`pipeline.predict`).

Built by :func:`predict_command` from the CLI's shared pieces (error handling, --quiet,
--device, the recorded command line) that pipeline/cli.py hands over when it registers it:
this module never imports pipeline.cli, so the two form no import circle.
"""
from __future__ import annotations

import sys

import click


def predict_command(domain_errors, quiet_option, device_option, command_line) -> click.Command:
    """The click command, decorated with the CLI's shared options and error handling."""

    @click.command("predict")
    @click.argument("store_path", metavar="STORE", type=click.Path(exists=True))
    @click.option("--agent", required=True, metavar="A.pt|BASELINE",
                  help="An agent checkpoint trained on STORE, or a baseline name (uniform, max_response, ...).")
    @click.option("--videos", "videos", required=True, type=click.Path(exists=True, dir_okay=False),
                  metavar="LIST", help="The new videos (a list as extract reads; labels, if any, give the accuracy).")
    @click.option("--root", default=None, type=click.Path(exists=True, file_okay=False),
                  help="Directory the list's paths are relative to.")
    @click.option("--m", "m", required=True, type=int, help="Positions to keep of the store's T.")
    @click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="PRED.csv",
                  help="Predictions: path, predicted, score, kept_frames, seconds, error.")
    @click.option("--json", "as_json", is_flag=True,
                  help="Write JSON lines (the same fields, plus positions, flow fields and seconds per stage).")
    @device_option("Where the backbones and flow run (cuda: a GPU torch sees).")
    @quiet_option
    @domain_errors
    def predict(store_path, agent, videos, root, m, out, as_json, device, quiet):
        """Classify new videos, computing flow and the other crops only where the agent keeps
        positions: a cheap pass (the observed stream's centre crop at all T positions), the
        agent's selection of m, the expensive pass at those m, the TSN-fused class. Exits 1
        when a video failed (its row says why; the others are predicted)."""
        from pipeline.predict import PredictConfig, run_predict

        cfg = PredictConfig(store=store_path, agent=agent, videos=videos, out=out, m=m, root=root,
                            as_json=as_json, device=device, quiet=quiet, command=command_line())
        summary = run_predict(cfg)
        click.echo(summary.text(), err=not summary.ok)
        if not summary.ok:
            sys.exit(1)

    return predict


__all__ = ["predict_command"]
