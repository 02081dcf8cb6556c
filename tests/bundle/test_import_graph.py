"""The modules of ``crossmatch_ext.bundle`` import one another one way, and the package re-exports them all."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import crossmatch_ext.bundle as bundle

PACKAGE = "crossmatch_ext.bundle"
PACKAGE_DIR = Path(bundle.__file__).resolve().parent
REPO_ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path, package: str) -> str:
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name an import statement of ``tree`` names, at module level or inside a function: for
    ``from a import b`` both ``a`` and ``a.b`` (``b`` may be a module); relative imports resolved against ``module``."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[: len(package_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """``{module: the modules of the package it imports}`` for every module file directly in ``package_dir``
    (the package itself, its ``__init__``, named ``package``)."""
    paths = {module_name(path, package): path for path in sorted(package_dir.glob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        imported = imported_names(tree, name, is_package=path.stem == "__init__")
        graph[name] = {other for other in imported if other in paths and other != name}
        if name != package and package in imported:  # the package itself, including ``from <package> import x``
            graph[name].add(package)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as ``[a, b, ..., a]``, or None when it is acyclic (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            cycle = visit(successor)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle is not None:
            return cycle
    return None


def test_the_checker_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"x": set(), "a": {"b", "x"}, "b": {"x", "a"}}) == ["a", "b", "a"]


def test_the_checker_reads_every_kind_of_import(tmp_path: Path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import f\nfrom pkg.b import g\n")
    (package / "a.py").write_text("import os\n\ndef f():\n    from pkg import b  # inside a function\n")
    (package / "b.py").write_text("def g():\n    from . import a\n")
    (package / "c.py").write_text("from .b import g\nimport pkg.a\n")
    graph = import_graph(package, "pkg")
    assert graph == {"pkg": {"pkg.a", "pkg.b"}, "pkg.a": {"pkg", "pkg.b"}, "pkg.b": {"pkg", "pkg.a"},
                     "pkg.c": {"pkg.a", "pkg.b"}}
    assert find_cycle(graph) is not None


def test_the_bundle_modules_import_one_way():
    graph = import_graph(PACKAGE_DIR, PACKAGE)
    assert set(graph) == {PACKAGE} | {f"{PACKAGE}.{m}" for m in
                                      ("config", "distributed", "monitors", "evaluation", "training", "checks", "auto")}
    importing_the_package = sorted(name for name, imported in graph.items() if PACKAGE in imported)
    assert not importing_the_package, f"import the sibling module, not {PACKAGE}: {importing_the_package}"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"
    assert graph[PACKAGE] == set(graph) - {PACKAGE}  # the package imports every module
    assert graph[f"{PACKAGE}.config"] == set()  # the base every other module builds on


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__"))
def test_the_package_reexports_every_public_name(module: str):
    names = __import__(f"{PACKAGE}.{module}", fromlist=["__all__"]).__all__
    missing = [name for name in names if name not in bundle.__all__ or not hasattr(bundle, name)]
    assert not missing, f"{PACKAGE}.{module} names not re-exported by {PACKAGE}: {missing}"


def test_every_name_the_repository_uses_resolves():
    pattern = re.compile(r"crossmatch_ext\.bundle\.([A-Za-z_]\w*)")
    files = [p for folder in ("bundles", "tests", "benchmarks", "scripts", "crossmatch_ext")
             for p in (REPO_ROOT / folder).rglob("*") if p.suffix in (".py", ".yaml", ".json", ".md", ".sh")]
    files.append(REPO_ROOT / "README.md")
    used = {name for path in files for name in pattern.findall(path.read_text(errors="replace"))}
    modules = {p.stem for p in PACKAGE_DIR.glob("*.py")}
    assert used and not sorted(name for name in used if name not in modules and not hasattr(bundle, name))
