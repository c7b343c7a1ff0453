"""Imports run one way: cli -> commands -> training / inference -> models, weights, data ->
infrastructure. Read from the source (every `import`, at the top of a module or inside a function),
so a lazy import against the grain fails here as surely as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gptclassify"

# Each part's layer: a module imports only from layers below its own (or from its own package).
# Infrastructure (files, devices, processes, downloads) is the ground floor.
INFRASTRUCTURE = {"errors", "files", "failpoints", "progress", "download", "hub", "device", "distributed", "plots",
                  "version", "options"}
LAYERS = {
    "models": 1, "data": 1,          # positions and tokens: know nothing of where weights come from
    "weights": 2,                    # what the user names -> a model and its tokenizer
    "classifier": 3,                 # head, freezing, pooling, the frozen prefix, adapters, metrics
    "config": 3.5, "rundir": 4,      # the run's schema, and the directory that holds a finished run
    "training": 5, "inference": 5,   # side by side: neither imports the other
    "export": 5.5,                   # a finished run as other tools' folders, checked by inference's backends
    "commands": 6, "cli": 7, "": 8, "__main__": 9,
}


def layer(name: str) -> float:
    return 0 if name in INFRASTRUCTURE else LAYERS[top(name)]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module (relative to the package, '' for the package itself) -> the package's modules it imports."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:  # `from . import x` names a module; `from .m import f` names m
                    candidate = f"{target}.{alias.name}".lstrip(".")
                    found.add(candidate if candidate in modules else target)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found |= {n.removeprefix("gptclassify").lstrip(".") for n in names if n.startswith("gptclassify")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def top(name: str) -> str:
    return name.split(".")[0]


def test_no_import_circle():
    graph, state, path = import_graph(), {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_imports_run_one_way():
    """cli -> commands -> training / inference -> rundir, config -> classifier -> weights -> models, data
    -> infrastructure; never sideways between training and inference, never up."""
    graph = import_graph()
    against = sorted(f"{name} -> {target}" for name, imported in graph.items() for target in imported
                     if top(name) != top(target) and not layer(name) > layer(target)
                     and not (name in INFRASTRUCTURE and target in INFRASTRUCTURE))
    assert not against, "imports against the direction:\n" + "\n".join(against)


def test_every_module_has_a_layer():
    assert all(top(name) in LAYERS or name in INFRASTRUCTURE for name in import_graph())


def test_the_graph_is_read_at_all():
    """The rules above check something: the graph holds the edges everyone knows are there."""
    graph = import_graph()
    assert "training.steps" in graph["training.run"] and "models.gpt2" in graph["models"]
    assert "classifier.prefix" in graph["inference.predict"]


def test_no_function_longer_than_a_screen():
    """Every function of the package reads in one screen (60 lines at most)."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, "\n".join(long)
