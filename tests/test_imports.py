"""Imports flow one way: data -> cells -> engine -> layers -> tasks -> train -> export and
report -> cli. Read from the source (every import statement, also those inside functions), so
a cycle hidden in a function-level import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# a module may import only modules of its own or an earlier stage
STAGES = [
    ["lstmkit._version", "lstmkit.data", "lstmkit.checks", "lstmkit.runtime"],
    ["lstmkit.cells"],
    ["lstmkit.engine", "lstmkit.dropout", "lstmkit.losses"],
    ["lstmkit.trace", "lstmkit.quantization"],
    ["lstmkit.layers", "lstmkit.init"],
    ["lstmkit.config", "lstmkit.runio", "lstmkit.plots"],
    ["lstmkit.tasks"],
    ["lstmkit.train", "lstmkit.distributed", "lstmkit.experiments", "lstmkit.analysis"],
    ["lstmkit.export", "lstmkit.report"],
    ["lstmkit.demo", "lstmkit.cli", "lstmkit.__main__", "lstmkit"],
]


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "lstmkit").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] \
                if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            subs = [f"{target}.{a.name}" for a in node.names]
            out.update(s for s in subs if s in known)
            if not all(s in known for s in subs):
                out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {t for t in out if t in known and t != name}


def stage(name: str) -> int:
    best = max((len(prefix), i) for i, group in enumerate(STAGES) for prefix in group
               if name == prefix or name.startswith(prefix + "."))
    return best[1]


def test_every_module_has_a_stage():
    for name in modules():
        stage(name)


def test_imports_go_one_way():
    known = modules()
    wrong = [f"{a} (stage {stage(a)}) imports {b} (stage {stage(b)})"
             for a, path in known.items() for b in sorted(imports(a, path, known))
             if stage(b) > stage(a)]
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph as a path that ends where it starts, or []."""
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt]
            if nxt not in state:
                found = visit(nxt, trail + [node])
                if found:
                    return found
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return []


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    known = modules()
    graph = {a: imports(a, p, known) for a, p in known.items()}
    # a package's __init__ importing its own submodules is no cycle; drop those edges
    graph = {a: {b for b in bs if not b.startswith(a + ".")} for a, bs in graph.items()}
    cycle = find_cycle(graph)
    assert not cycle, " -> ".join(cycle)
