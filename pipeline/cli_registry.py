"""``framesel agents``: what the registries hold, read from them (agents/registry.py: entry)."""
from __future__ import annotations

import json

import click

from pipeline.edge import domain_errors


@click.command("agents")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def agents_command(as_json):
    """List the registered agents and baselines (FRAMESEL_PLUGINS' too): what each is, its
    options with the papers' defaults (`framesel train --set NAME=VALUE`) and its abilities."""
    from agents.registry import entry, selector_names

    records = [entry(n) for n in selector_names()]
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2, default=str))
        return
    for r in records:
        click.echo(f"{r.name} ({'agent' if r.learned else 'baseline'}): {r.summary}")
        if r.options:
            click.echo("  options: " + ", ".join(f"{k}={v}" for k, v in r.options.items()))
        click.echo("  abilities: " + ", ".join(f"{k}={v}" for k, v in r.abilities.items() if v not in (None, False, [], "")))
