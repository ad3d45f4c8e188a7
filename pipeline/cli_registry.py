"""``framesel agents | flows | backbones | protocols``: what the registries hold, read from
them as one record per entry (data/record.py), as text or ``--json``."""
from __future__ import annotations

import json

import click

from pipeline.edge import domain_errors


def _agents():
    from agents.registry import entry, selector_names

    return [entry(n) for n in selector_names()]


def _flows():
    import extract.flow  # noqa: F401  (registers the algorithms)
    from extract.flow_registry import flow_algorithms, flow_record

    return [flow_record(n) for n in flow_algorithms()]


def _backbones():
    from extract.backbones import backbone_names
    from extract.backbones.spec import backbone_record

    return [backbone_record(n) for n in backbone_names()]


def _protocols():
    from evaluate.protocols import protocol_records

    return protocol_records()


def _show(records, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2, default=str))
        return
    for r in records:
        click.echo(f"{r.name} ({r.kind}): {r.summary}")
        if r.options:
            click.echo("  options: " + ", ".join(f"{k}={v}" for k, v in r.options.items()))
        if r.cost:
            click.echo(f"  cost: {r.cost}")
        shown = {k: v for k, v in r.abilities.items() if v not in (None, False, [], "")}
        if shown:
            click.echo("  abilities: " + ", ".join(f"{k}={v}" for k, v in shown.items()))


def _listing(name: str, records, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @domain_errors
    def command(as_json):
        _show(records(), as_json)
    return command


agents_command = _listing("agents", _agents, "List the registered agents and baselines (FRAMESEL_PLUGINS' too): "
                          "what each is, its options with the papers' defaults (`framesel train --set NAME=VALUE`), "
                          "its cost model and its abilities.")
flows_command = _listing("flows", _flows, "List the registered flow algorithms (FRAMESEL_PLUGINS' too): what each "
                         "is, its parameters with their defaults (`framesel extract --flow-param NAME=VALUE`), its "
                         "cost model and what it declares.")
backbones_command = _listing("backbones", _backbones, "List the registered backbones (FRAMESEL_PLUGINS' too): what "
                             "each is, where its weights come from, the streams it serves and its cost model.")
protocols_command = _listing("protocols", _protocols, "List the evaluation protocols in report order: what each "
                             "gives, the paper's table it reproduces, the options it reads and what it needs.")
REGISTRY_COMMANDS = (agents_command, flows_command, backbones_command, protocols_command)
