"""The house's rules, checked on the source (issue 30): each package imports only the floors
below it (ARCHITECTURE.md), no import circle between framesel's modules, no private name
imported across modules, no source file over 400 lines.

The import graph is read with ``ast`` (every ``import``/``from … import`` in a module,
function-level ones included: a lazy import that closes a circle is still a circle)."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "extract", "agents", "evaluate", "pipeline")
MAX_LINES = 400
# What each package may import besides itself: data the floor, extract and agents beside each
# other on it, evaluate above agents, pipeline (the CLI) on top.
FLOORS = {"data": set(), "extract": {"data"}, "agents": {"data"}, "evaluate": {"data", "agents"},
          "pipeline": {"data", "extract", "agents", "evaluate"}}
# Files still over MAX_LINES, each with the most lines it may have: the list only shrinks.
OVER: dict[str, int] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(name: str, path: Path, modules) -> tuple[set[str], list[tuple[str, str]]]:
    """(framesel modules ``name`` imports, private names it imports from another module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges, private = set(), []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            edges |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                edges.add(full if full in modules else base)
                if a.name.startswith("_") and not a.name.startswith("__") and full not in modules:
                    private.append((base, a.name))
    edges.discard(name)
    return {e for e in edges if e in modules}, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph():
    modules = _modules()
    graph, private = defaultdict(set), {}
    for name, path in modules.items():
        graph[name], private[name] = _imports(name, path, modules)
    return graph, private


def test_no_import_circle():
    graph, _ = _graph()
    assert _cycles(graph) == []


def test_every_package_imports_only_its_floors():
    graph, _ = _graph()
    upward = sorted(f"{a} -> {b}" for a, bs in graph.items() for b in bs
                    if b.split(".")[0] != a.split(".")[0] and b.split(".")[0] not in FLOORS[a.split(".")[0]])
    assert upward == [], "imports against the floors (ARCHITECTURE.md): " + ", ".join(upward)


def test_no_private_name_crosses_a_module():
    _, private = _graph()
    assert {m: p for m, p in private.items() if p} == {}


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    grown = {f: n for f, n in long.items() if n > OVER.get(f, MAX_LINES)}
    assert grown == {}, "over 400 lines (split by what each part holds): " + ", ".join(f"{f} {n}" for f, n in grown.items())


def test_the_checks_find_what_they_look_for(tmp_path):
    """A circle and a private import planted in a graph are found (the checks can fail)."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    (tmp_path / "m.py").write_text("from data.lists import _x\nfrom data import lists\n")
    edges, private = _imports("evaluate.m", tmp_path / "m.py", {"data.lists": None, "data": None})
    assert edges == {"data.lists"} and private == [("data.lists", "_x")]
