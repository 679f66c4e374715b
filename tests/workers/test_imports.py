"""No import circle among the modules of introspect/ and workers/.

Every `import` and `from ... import` counts, wherever it is: at the top, inside a function (a
lazy import is still a dependency, only a later one), and under `if TYPE_CHECKING:` (mypy and
any reader follow it; a circle there is a circle in the design, and the first runtime use of
the name would close it). Modules named in strings (`importlib.import_module`, workers/backends.py;
Celery's `include=`) are not edges: that is how a module picks an implementation without
depending on it. A package's `__init__` is a module like any other; importing `a.b` is an edge
to `a.b` only (the parent package runs first, but it does not depend on the child)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.workers.services import ROOT

PACKAGES = ("introspect", "workers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `name` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from a import b` names the submodule a.b when there is one, else a name in a
            names = [f"{base}.{alias.name}" for alias in node.names]
            targets = [target if target in known else base for target in names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_itself_back():
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert "workers.glance.catalog" in graph["workers.glance.cli"]  # the walk sees real imports
    circle = cycle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_catalog_package_knows_no_backend_but_its_own():
    """workers/catalog is the contract and the SQL catalog; the wiring picks Glance by name."""
    found = modules()
    for name, path in found.items():
        if name.startswith("workers.catalog"):
            assert not {i for i in imports_of(name, path, set(found)) if i.startswith("workers.glance")}, name


def test_a_circle_is_found():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
