"""The import graph of the sccr package and its layers (README "Layout"; checked by tests/test_architecture.py).

Usage: ``python scripts/import_graph.py [--dot]`` prints every module with the
sccr modules it imports (at module level or inside functions), or Graphviz dot.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sccr"

#: Layers from the bottom: a module may import from its own layer or a lower one only.
LAYERS = (
    ("leaves", ("sccr._errors", "sccr._resources", "sccr._versions")),
    ("options", ("sccr._options",)),
    ("engine", ("sccr._engine",)),
    ("around the engine", ("sccr._io", "sccr._adata", "sccr._preprocess", "sccr._evaluation", "sccr.datasets")),
    (
        "faces",
        (
            "sccr._estimator",
            "sccr._anndata",
            "sccr.pp",
            "sccr.tl",
            "sccr.pl",
            "sccr.get",
            "sccr._benchmark",
            "sccr.cli",
        ),
    ),
    ("package", ("sccr",)),
)


def module_name(path: Path) -> str:
    parts = ("sccr", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    if node.module is None:  # from . import a, b: the submodules
        return [f"{base}.{alias.name}" for alias in node.names]
    return [base]


def import_graph() -> dict[str, set[str]]:
    """Module -> the sccr modules it imports (submodule imports resolved to the module named)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.split(".")[0] == "sccr"}
            elif isinstance(node, ast.ImportFrom):
                targets |= {t for t in _resolve(name, path.name == "__init__.py", node) if t.split(".")[0] == "sccr"}
        # A name imported from a package may be a submodule or an attribute: keep the longest existing module.
        resolved = set()
        for target in targets:
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                resolved.add(target)
        graph[name] = resolved
    return graph


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest prefix that matches ``module``."""
    best, length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    if best is None:
        raise KeyError(f"{module} is in no layer of scripts/import_graph.py")
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> None:
    graph = import_graph()
    if "--dot" in sys.argv:
        print("digraph sccr {\n  rankdir=BT;")
        for module, targets in sorted(graph.items()):
            for target in sorted(targets):
                print(f'  "{module}" -> "{target}";')
        print("}")
        return
    for layer, (title, _) in reversed(list(enumerate(LAYERS))):
        print(f"{title}:")
        for module in sorted(m for m in graph if layer_of(m) == layer):
            print(f"  {module} -> {', '.join(sorted(graph[module])) or '-'}")


if __name__ == "__main__":
    main()
