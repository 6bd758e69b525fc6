"""radgen's import graph follows its layers: imports only point down, and there is no cycle.

    4  serve/*, cli, demo, pipeline, machine, radgen/__init__, __main__, every */cli.py   user-facing ends
    3  train/*  generate/*  explain/*  metrics/*                                 stages (side by side)
    2  models/*                                                                  encoder → connector → decoder
    1  data/*                                                                    studies, images, datasets
    0  errors, io, config, version, labels/*, threads, allocator, quiet, arguments  foundations

Every module under radgen/ is parsed with `ast`; every import counts, at module level, inside a
function or under TYPE_CHECKING, plus the module names given as strings to importlib.import_module
(the CLI's subcommand table, the data adapters). A module may import its own layer or any lower
one; stages in layer 3 do not import each other except for the edges in ALLOWED_ACROSS_STAGES,
each with its reason. docs/architecture.md draws the same picture.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "radgen"

LAYER_NAMES = {0: "foundations", 1: "data", 2: "models", 3: "stages", 4: "user-facing ends"}
# package or module -> layer; the longest matching prefix wins; `*.cli` modules are layer 4
LAYERS = {
    "radgen.errors": 0, "radgen.io": 0, "radgen.config": 0, "radgen.version": 0, "radgen.labels": 0,
    "radgen.threads": 0, "radgen.quiet": 0, "radgen.arguments": 0, "radgen.allocator": 0,
    "radgen.data": 1,
    "radgen.models": 2,
    "radgen.train": 3, "radgen.generate": 3, "radgen.explain": 3, "radgen.metrics": 3,
    "radgen": 4, "radgen.__main__": 4, "radgen.cli": 4, "radgen.demo": 4, "radgen.pipeline": 4, "radgen.serve": 4,
    "radgen.machine": 4,  # `radgen env`: reports what radgen.models.fast picks on this CPU
}
EXACT_ONLY = {"radgen"}  # the package's __init__, not everything under it

# (importer, imported) across layer-3 stages, with why the stage cannot do without it
ALLOWED_ACROSS_STAGES = {
    ("radgen.explain.pipeline", "radgen.generate.decode"):
        "explain_studies explains the reports it generates, over generate's own batches and settings",
    ("radgen.explain.pipeline", "radgen.generate.confidence"):
        "a sentence's confidence in explanations.jsonl is generate's sentence confidence, so both agree",
    ("radgen.train.evaluation", "radgen.metrics.text"):
        "validation BLEU-4 / ROUGE-L during training use the evaluation's implementation (optional import)",
}

DYNAMIC_NAME = re.compile(r"^(radgen(?:\.\w+)+)(?::\w+)?$")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The radgen module `name` lives in (a module, else the package that defines the attribute)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported radgen module, line) for every import in `path`, wherever it sits."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    dynamic = "import_module" in path.read_text()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule if submodule in known else source, node.lineno))
        elif dynamic and isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = DYNAMIC_NAME.match(node.value)
            if match and match.group(1) in known:
                found.append((match.group(1), node.lineno))
    edges = []
    for name, line in found:
        if name == "radgen" or name.startswith("radgen."):
            target = _owner(name, known)
            if target and target != module:
                edges.append((target, line))
    return list(dict.fromkeys(edges))  # `from m import a, b` is one edge


def layer_of(module: str) -> int:
    if module.endswith(".cli"):
        return 4
    candidates = [prefix for prefix in LAYERS
                  if module == prefix or (prefix not in EXACT_ONLY and module.startswith(prefix + "."))]
    if not candidates:
        raise AssertionError(f"{module} has no layer: add it (or its package) to LAYERS in tests/test_layers.py "
                             "and to docs/architecture.md")
    return LAYERS[max(candidates, key=len)]


def stage_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {module: imports(module, path, known) for module, path in known.items()}


GRAPH = graph()


def _where(module: str, line: int) -> str:
    return f"{modules()[module].relative_to(PACKAGE.parent)}:{line}"


def test_every_module_has_a_layer():
    for module in GRAPH:
        layer_of(module)


def test_imports_only_point_down():
    bad = []
    for module, edges in GRAPH.items():
        for target, line in edges:
            if layer_of(target) > layer_of(module):
                bad.append(f"{_where(module, line)}: {module} (layer {layer_of(module)}, {LAYER_NAMES[layer_of(module)]}) "
                           f"imports {target} (layer {layer_of(target)}, {LAYER_NAMES[layer_of(target)]})")
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_stages_do_not_import_each_other():
    bad, used = [], set()
    for module, edges in GRAPH.items():
        for target, line in edges:
            if layer_of(module) == layer_of(target) == 3 and stage_of(module) != stage_of(target):
                if (module, target) in ALLOWED_ACROSS_STAGES:
                    used.add((module, target))
                else:
                    bad.append(f"{_where(module, line)}: {module} imports {target}")
    assert not bad, ("layer-3 stages import each other (move the shared code down a layer, or allow the edge in "
                     "ALLOWED_ACROSS_STAGES with its reason):\n" + "\n".join(bad))
    stale = set(ALLOWED_ACROSS_STAGES) - used
    assert not stale, f"allowed edges that no longer exist (remove them): {sorted(stale)}"


def test_no_import_cycle():
    edges = {module: sorted({target for target, _ in targets}) for module, targets in GRAPH.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in edges.get(module, []):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            lines = [f"{a} -> {b} ({_where(a, next(line for t, line in GRAPH[a] if t == b))})" for a, b in zip(cycle, cycle[1:])]
            pytest.fail("import cycle:\n" + "\n".join(lines))


def test_the_checker_sees_in_function_relative_and_dynamic_imports(tmp_path):
    """The parser itself: an import inside a function, a relative import and an import_module string count."""
    (tmp_path / "pkg").mkdir()
    source = tmp_path / "pkg" / "low.py"
    source.write_text("import importlib\n"
                      "def f():\n    from radgen.serve.app import create_app\n"
                      "from .other import thing\n"
                      "handler = importlib.import_module('radgen.train.cli')\n")
    known = {"radgen.models.low": source, "radgen.models.other": source, "radgen.serve.app": source, "radgen.train.cli": source}
    found = {target for target, _ in imports("radgen.models.low", source, known)}
    assert {"radgen.serve.app", "radgen.models.other", "radgen.train.cli"} <= found
