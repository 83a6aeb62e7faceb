"""The import graph of vbo's own modules has no cycle and only points down the layers of docs/architecture.md."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "vbo"

# Layers from the bottom up (docs/architecture.md, "Layers"). A module may import modules of its own layer or of
# any layer below it, never above. A package name (``vbo.nwb``) stands for its ``__init__``; a prefix ending in
# ``.`` covers every module under that package.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("vbo.errors", "vbo.values", "vbo.members", "vbo.parallel", "vbo.tables", "vbo.screen",
                    "vbo.known_issues")),
    ("source", ("vbo.source", "vbo.source.")),
    ("cache", ("vbo.cache", "vbo.cache.manifest", "vbo.cache.urls", "vbo.cache.download", "vbo.cache.stores",
               "vbo.cache.publish")),
    ("file", ("vbo.nwb", "vbo.nwb.", "vbo.derive")),
    ("session", ("vbo.behavior", "vbo.behavior.", "vbo.session", "vbo.experiment")),
    ("release", ("vbo.cache.project", "vbo.history")),
    ("analysis", ("vbo.events", "vbo.responses", "vbo.population")),
    ("output", ("vbo", "vbo.__main__", "vbo.plots", "vbo.plots.", "vbo.report", "vbo.report.", "vbo.export",
                "vbo.cli", "vbo.demo", "vbo.simulate", "vbo.simulate.")),
)

# Imports of another module's private names (``_x``) or of a private module from outside its package, each with
# its reason; checked like ALLOWED_UPWARD, so the list only shrinks.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}

# Upward imports still in the code, each with its reason. The test below fails when an entry is no longer
# needed, so the list only shrinks. Keep it empty if you can.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.AST):
    """Every import statement, at module level or inside functions, except under ``if TYPE_CHECKING:``
    (annotations only; never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The vbo module that ``name`` (a module or a name inside one) belongs to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, importer: str, path: Path, modules: dict[str, Path]):
    if isinstance(node, ast.Import):
        yield from (_known(alias.name, modules) for alias in node.names)
        return
    if node.level:  # relative import
        base = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        yield submodule if submodule in modules else _known(source, modules)


def import_graph() -> dict[str, set[str]]:
    """``importer → {imported vbo modules}`` over every module of src/vbo."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _targets(node, name, path, modules):
                if target and target.startswith("vbo") and target != name:
                    graph[name].add(target)
    return graph


def _private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split("."))


def private_reach_ins() -> set[tuple[str, str]]:
    """``(importer, module.name)`` for every import of a private name of another module, or of a private module
    from outside the package that holds it (module-level and function-level imports)."""
    modules = _modules()
    found = set()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("vbo"):
                continue
            source = node.module
            is_package = source in modules and modules[source].name == "__init__.py"
            owner = source if is_package else source.rpartition(".")[0]  # the package holding ``source``
            for alias in node.names:
                target = f"{source}.{alias.name}"
                private_name = _private(alias.name) and source != name
                private_module = _private(source) and not package.startswith(owner)
                if private_name or private_module:
                    found.add((name, target))
    return found


def layer_of(module: str) -> int:
    """Index of ``module``'s layer in :data:`LAYERS`; the most specific entry wins."""
    best: tuple[int, int] | None = None  # (length of the matching entry, layer)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            matches = module.startswith(entry) if entry.endswith(".") else module == entry
            if matches and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    if best is None:
        raise KeyError(module)
    return best[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


READER_LAYERS = ("foundation", "file", "session")


def reader_cache_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """``(importer, imported)`` for every import of a ``vbo.cache`` module by a module of :data:`READER_LAYERS`."""
    names = [name for name, _ in LAYERS]
    reader = {names.index(layer) for layer in READER_LAYERS}
    return {(a, b) for a, targets in graph.items() if layer_of(a) in reader for b in targets
            if b == "vbo.cache" or b.startswith("vbo.cache.")}


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)}


# ------------------------------------------------------------------------------------------------


def test_the_checker_sees_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert upward_imports({"vbo.nwb.read": {"vbo.session", "vbo.errors"}}) == {("vbo.nwb.read", "vbo.session")}


def test_the_graph_holds_function_level_imports():
    # vbo.cli imports its commands' modules inside the commands only
    assert "vbo.export" in import_graph()["vbo.cli"]


def test_every_module_has_a_layer():
    unplaced = []
    for module in _modules():
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"add these modules to LAYERS (and docs/architecture.md): {unplaced}"


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_imports_only_point_down_the_layers():
    upward = upward_imports(import_graph()) - set(ALLOWED_UPWARD)
    names = [name for name, _ in LAYERS]
    described = [f"{a} ({names[layer_of(a)]}) → {b} ({names[layer_of(b)]})" for a, b in sorted(upward)]
    assert not upward, "imports that go up the layers:\n" + "\n".join(described)


@pytest.mark.parametrize("pair", sorted(ALLOWED_UPWARD) or [None])
def test_every_allowed_exception_is_still_needed(pair):
    if pair is None:
        assert ALLOWED_UPWARD == {}
        return
    assert pair in upward_imports(import_graph()), f"{pair} no longer goes up: remove it from ALLOWED_UPWARD"


def test_the_reader_never_imports_the_cache():
    # Opening a local or remote file is the source layer's (vbo.source); the file and session layers (and the
    # foundation under them) read files without importing any module of vbo.cache.
    found = reader_cache_imports(import_graph())
    assert not found, "reader modules importing the cache: " + ", ".join(f"{a} → {b}" for a, b in sorted(found))
    assert not reader_cache_imports({"vbo.session": {"vbo.source"}, "vbo.cache.project": {"vbo.cache.download"}})
    assert reader_cache_imports({"vbo.nwb.pool": {"vbo.cache.download"}}) == {("vbo.nwb.pool", "vbo.cache.download")}


def test_no_private_reach_ins():
    extra = private_reach_ins() - set(ALLOWED_PRIVATE)
    assert not extra, "imports of another module's private names: " + ", ".join(f"{a} → {b}" for a, b in sorted(extra))


def test_every_allowed_private_import_is_still_needed():
    gone = set(ALLOWED_PRIVATE) - private_reach_ins()
    assert not gone, "no longer imported, remove from ALLOWED_PRIVATE: " + ", ".join(map(str, sorted(gone)))


def test_version_is_written_once_and_types_ship():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vbo.__version__"}
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["vbo"]
