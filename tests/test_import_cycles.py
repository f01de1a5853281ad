"""No import cycles among xreduce's modules (issue 14, finding 10), checked on the source.

Every module of the package is parsed; an edge A -> B is an ``import`` of B written at A's
module level (not inside a function: a lazy import cannot form a cycle at import time),
with ``from pkg import name`` counted as importing ``pkg.name`` when that is a module.
The graph must have no cycle; and every module must import on its own in a fresh process
order (importing them all in one process here). Runs in CI with the rest of the tests.
"""
import ast
import importlib
import pkgutil
from pathlib import Path

import xreduce


def _modules() -> dict[str, Path]:
    root = Path(xreduce.__file__).parent
    found = {"xreduce": root / "__init__.py"}
    for info in pkgutil.walk_packages([str(root)], prefix="xreduce."):
        spec = importlib.util.find_spec(info.name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            found[info.name] = Path(spec.origin)
    return found


def _top_level_imports(name: str, path: Path, modules: dict) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in tree.body:  # module level only
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else base)
    return {m for m in out if m in modules and m != name}


def test_no_import_cycles():
    modules = _modules()
    assert "xreduce.engines.registry" in modules and "xreduce.integrator" in modules
    graph = {name: _top_level_imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_dct_does_not_import_cli():
    """The library never imports the command-line layer (finding 10: dct/ imported cli/)."""
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("xreduce.cli") or name.endswith(("_cli", ".__main__")):
            continue
        imports = _top_level_imports(name, path, modules)
        assert not any(m.startswith("xreduce.cli") for m in imports), (name, imports)
