"""The folders show the layers: imports (read with ast, late ones too) only point down, and nothing cycles.

compiler/ layers as frontend (with the options) -> passes -> partition -> plan -> codegen -> backends -> the
driver (planner, build, inspect, ...) -> serving, sweep -> cli; ir/ imports neither compiler/ nor targets/, and
targets/ (the interpreter among them) never imports compiler/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (
    ("frontend", ("compiler/frontend",)),
    ("passes", ("compiler/passes",)),
    ("partition", ("compiler/partition",)),
    ("plan", ("compiler/plan",)),
    ("codegen", ("compiler/codegen",)),
    ("backends", ("compiler/backends",)),
    ("driver", ("compiler/planner.py", "compiler/build.py", "compiler/compare.py", "compiler/formats.py",
                "compiler/image.py", "compiler/inspect.py", "compiler/timeline.py", "compiler/speculation.py",
                "compiler/__init__.py")),
    ("serving", ("compiler/serving", "compiler/sweep")),
    ("cli", ("compiler/cli",)),
)


def _modules() -> dict[str, str]:
    out = {}
    for package in ("compiler", "ir", "targets"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            out[rel[:-3].replace("/", ".").removesuffix(".__init__")] = rel
    return out


def _imports(modules: dict[str, str]) -> nx.DiGraph:
    """Module -> module it imports, anywhere in the file (a function's late import counts)."""
    graph = nx.DiGraph()
    for mod, rel in modules.items():
        graph.add_node(mod)
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from targets import h100` imports the module targets.h100; `from ir.isa import Op`, ir.isa
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names]
            else:
                continue
            graph.add_edges_from((mod, n) for n in names if n in modules and n != mod)
    return graph


MODULES = _modules()
GRAPH = _imports(MODULES)


def _layer(rel: str) -> int | None:
    return next((i for i, (_, prefixes) in enumerate(LAYERS)
                 if any(rel == p or rel.startswith(p + "/") for p in prefixes)), None)


def test_every_compiler_module_sits_in_a_layer():
    assert [rel for rel in MODULES.values() if rel.startswith("compiler/") and _layer(rel) is None] == []


def test_no_module_imports_a_layer_above_its_own():
    upward = [(a, b) for a, b in GRAPH.edges
              if a.startswith("compiler") and b.startswith("compiler")
              and _layer(MODULES[b]) > _layer(MODULES[a])]
    assert upward == []


def test_no_import_cycles_between_modules_or_folders():
    assert list(nx.simple_cycles(GRAPH)) == []
    folders = nx.DiGraph((str(Path(MODULES[a]).parent), str(Path(MODULES[b]).parent)) for a, b in GRAPH.edges)
    folders.remove_edges_from(nx.selfloop_edges(folders))
    assert [c for c in nx.strongly_connected_components(folders) if len(c) > 1] == []


def test_ir_and_targets_stand_below_the_compiler():
    assert [(a, b) for a, b in GRAPH.edges if a.startswith("ir") and not b.startswith("ir")] == []
    assert [(a, b) for a, b in GRAPH.edges if a.startswith("targets") and b.startswith("compiler")] == []
