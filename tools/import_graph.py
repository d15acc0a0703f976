"""The import graph of our packages, read from their source, and any import cycle in it.

    python -m tools.import_graph [--all]     (from the repo root)

Prints each clip_core module (with --all: every module of clip_core, clip_torch, clip_tf and
clip_flax) and the modules of our packages it imports, at any level: an import inside a function
is marked ``*``. Then the first cycle among them, or "no import cycle"; the exit status is 1 when
there is one. tests/test_layout.py asserts the same and more with these functions.

The graph is built with ``ast`` alone (nothing is imported). ``from a import b`` counts as an
import of the module ``a.b`` where that is a module, else of ``a``; importing ``a.b`` runs ``a``
first, but that edge to a parent package is not drawn (every submodule would otherwise seem to
close a cycle with a package ``__init__`` that imports it).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("clip_core", "clip_torch", "clip_tf", "clip_flax")


@dataclasses.dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "clip_core.weights"
    target: str  # the module imported, resolved against ours: "clip_core.formats", "numpy", "torch.nn"
    line: int
    top_level: bool  # runs when the module is imported (not inside a function)


def module_files(packages=PACKAGES, root: str = ROOT) -> dict[str, str]:
    """Module name -> file, for every .py file below the packages (a package is its __init__.py)."""
    files = {}
    for package in packages:
        for folder, dirs, names in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
                    if parts[-1] == "__init__":
                        parts.pop()
                    files[".".join(parts)] = path
    return files


def _walk(node: ast.AST, in_function: bool = False):
    """(node, inside a function?) for every node below ``node``."""
    for child in ast.iter_child_nodes(node):
        inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield child, inside
        yield from _walk(child, inside)


def _package_of(module: str, path: str) -> str:
    return module if path.endswith("__init__.py") else module.rpartition(".")[0]


def module_imports(module: str, path: str, modules) -> list[Import]:
    """Every import statement of one module, its target resolved against ``modules`` (ours)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node, in_function in _walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module, path).split(".")
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            targets = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        else:
            continue
        found += [Import(module, t, node.lineno, not in_function) for t in dict.fromkeys(targets)]
    return found


def all_imports(packages=PACKAGES, root: str = ROOT) -> list[Import]:
    files = module_files(packages, root)
    return [imp for module, path in files.items() for imp in module_imports(module, path, files)]


def graph(imports: list[Import], within: str | tuple[str, ...] = PACKAGES) -> dict[str, dict[str, bool]]:
    """module -> {imported module: top level?} for the modules under ``within`` (package names)."""
    within = (within,) if isinstance(within, str) else tuple(within)

    def ours(name: str) -> bool:
        return name.split(".")[0] in within

    edges: dict[str, dict[str, bool]] = {}
    for imp in imports:
        if ours(imp.module):
            node = edges.setdefault(imp.module, {})
            if ours(imp.target) and imp.target != imp.module:
                node[imp.target] = node.get(imp.target, False) or imp.top_level
    return edges


def find_cycle(edges: dict[str, dict[str, bool]]) -> list[str] | None:
    """One import cycle (its first module repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once explored
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(edges.get(module, {})):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="all four packages, not clip_core alone")
    args = parser.parse_args(argv)
    within = PACKAGES if args.all else "clip_core"
    edges = graph(all_imports(), within)
    count = sum(len(targets) for targets in edges.values())
    print(f"{len(edges)} modules, {count} imports between them (* inside a function only):")
    for module in sorted(edges):
        shown = [t + ("" if top else "*") for t, top in sorted(edges[module].items())]
        print(f"  {module} -> {', '.join(shown) or '-'}")
    cycle = find_cycle(edges)
    print(f"import cycle: {' -> '.join(cycle)}" if cycle else "no import cycle")
    return 1 if cycle else 0


if __name__ == "__main__":
    sys.exit(main())
