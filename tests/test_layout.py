"""The package layout, read from the source with ``ast`` (nothing is imported): clip_core has no
import cycle and needs no framework to import; no package imports the tools/ scripts or another
module's underscore names; nothing edits sys.path. ``python -m tools.import_graph`` prints the
graph these tests look at."""

from __future__ import annotations

import ast
import os
import sys

import pytest

from tools.import_graph import PACKAGES, ROOT, all_imports, find_cycle, graph, module_files

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax")
BACKENDS = ("clip_torch", "clip_tf", "clip_flax")
# clip_core's import-time dependencies besides the standard library: [project] dependencies in
# pyproject.toml, by import name (pillow is PIL). Everything else is imported where it is used.
CORE_DEPENDENCIES = ("numpy", "PIL", "regex", "ftfy", "safetensors")


@pytest.fixture(scope="module")
def imports():
    return all_imports()


def _where(imp) -> str:
    return f"{imp.module} (line {imp.line}): import {imp.target}"


def test_the_graph_sees_every_module_and_inner_imports(imports):
    modules = module_files()
    assert {"clip_core", "clip_core.formats", "clip_core.formats.base", "clip_flax.cli"} <= set(modules)
    assert set(graph(imports)) == set(modules)
    # an import inside a function is an edge too (conversion writes tokenizer files on demand)
    assert graph(imports, "clip_core")["clip_core.conversion"]["clip_core.tokenization_fast"] is False


def test_find_cycle_reports_the_cycle():
    edges = {"a": {"b": True}, "b": {"c": False}, "c": {"a": True}, "d": {"a": True}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": True}, "b": {}}) is None


def test_no_import_cycle_among_clip_core_modules(imports):
    cycle = find_cycle(graph(imports, "clip_core"))
    assert cycle is None, "import cycle in clip_core: " + " -> ".join(cycle)


def test_clip_core_imports_no_framework_at_import_time(imports):
    core = [imp for imp in imports if imp.module.split(".")[0] == "clip_core" and imp.top_level]
    frameworks = [_where(imp) for imp in core if imp.target.split(".")[0] in FRAMEWORKS]
    assert not frameworks, "clip_core must import frameworks inside functions only: " + "; ".join(frameworks)
    allowed = set(sys.stdlib_module_names) | {"__future__", "clip_core", *CORE_DEPENDENCIES}
    others = [_where(imp) for imp in core if imp.target.split(".")[0] not in allowed]
    assert not others, "clip_core imports more than the stdlib and its dependencies: " + "; ".join(others)


def test_clip_core_imports_no_backend(imports):
    up = [
        _where(i) for i in imports if i.module.startswith("clip_core") and i.target.split(".")[0] in BACKENDS
    ]
    assert not up, "clip_core sits below the backends: " + "; ".join(up)


def test_no_package_imports_the_tools_scripts(imports):
    assert all(imp.module.split(".")[0] in PACKAGES for imp in imports)
    tools = [_where(imp) for imp in imports if imp.target.split(".")[0] == "tools"]
    assert not tools, "tools/ holds scripts, not library code: " + "; ".join(tools)


# Known exception: the two tokenizer modules share a private base class.
PRIVATE_IMPORTS_ALLOWED = {("clip_core.tokenization_fast", "_CLIPTokenizerBase")}


def test_no_package_module_imports_private_names_of_another():
    found = []
    for module, path in module_files().items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or node.module.split(".")[0] in PACKAGES):
                found += [
                    f"{module} (line {node.lineno}): {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and (module, a.name) not in PRIVATE_IMPORTS_ALLOWED
                ]
    assert not found, "a module's underscore names are its own: " + "; ".join(found)


def _sys_path_edits(path: str) -> list[str]:
    """Lines of ``path`` that change sys.path: a call of one of its methods, or an assignment."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)

    def is_sys_path(node) -> bool:
        while isinstance(node, ast.Subscript):
            node = node.value
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        )

    edits = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and is_sys_path(node.func.value)
        ):
            edits.append(node)
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            edits += [node for t in targets if is_sys_path(t)]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "site.addsitedir",
            "sys.path_hooks.append",
        ):
            edits.append(node)
    edits.sort(key=lambda n: n.lineno)
    return [f"{os.path.relpath(path, ROOT)}:{n.lineno}: {ast.unparse(n)}" for n in edits]


def test_sys_path_edit_detector(tmp_path):
    sample = "import sys\nsys.path.insert(0, 'x')\nsys.path[:0] = ['y']\nsys.path += ['z']\nprint(sys.path)\n"
    (tmp_path / "sample.py").write_text(sample)
    edits = _sys_path_edits(str(tmp_path / "sample.py"))
    assert [int(e.split(": ")[0].rsplit(":", 1)[1]) for e in edits] == [2, 3, 4]


def test_nothing_edits_sys_path():
    files = list(module_files(PACKAGES).values())
    for folder in ("tools", "tests"):
        files += [os.path.join(ROOT, folder, n) for n in sorted(os.listdir(os.path.join(ROOT, folder)))]
    edits = [edit for path in files if path.endswith(".py") for edit in _sys_path_edits(path)]
    assert not edits, "run scripts as modules from the repo root instead: " + "; ".join(edits)


def test_tools_is_a_folder_of_scripts_not_a_package():
    assert not os.path.exists(os.path.join(ROOT, "tools", "__init__.py"))
