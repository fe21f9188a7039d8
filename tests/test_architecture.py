"""The shape of the code, checked from the source (docs/ARCHITECTURE.md explains it).

- No import cycles inside `droidft/`: the graph is built with `ast` from every module-level
  and function-level import, relative or absolute (only `if TYPE_CHECKING:` blocks are left
  out, as they never run).
- The engine never imports the dashboard helpers (`droidft.studio`) and nothing in
  `droidft/` imports Streamlit.
- No module in `droidft/` or `app/` is over MAX_LINES lines, except the few in LARGE_MODULES,
  each with the reason a split would hurt or must wait.

The checkers are plain functions over a folder, so the tests at the bottom run them on small
bad packages to show that each one fails when it should.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500

# path -> why it may stay over MAX_LINES. Keep this short; remove an entry once the file shrinks
# (test_allow_list_is_still_needed fails when an entry is no longer needed).
LARGE_MODULES: dict[str, str] = {}


# ------------------------------------------------------------------------- the import graph


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `root`: dotted name -> file."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom anywhere in the tree (functions, classes, try blocks...),
    except those inside `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: dict) -> str | None:
    """The longest prefix of `name` that is one of our modules."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict) -> set[str]:
    """The modules of ours that `module` imports, and the external top-level names it imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import name`: name is a submodule, or something defined in pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        for target in targets:
            found.add(_known(target, modules) or "external:" + target.split(".")[0])
    found.discard(module)
    return found


def import_graph(root: Path, package: str = "droidft") -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports (plus `external:NAME` entries)."""
    modules = module_names(root, package)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component, as a path that returns to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    cycles = []
    for comp in components:
        members = set(comp)
        start = min(comp)
        # breadth-first search for the shortest way from start back to start inside the component
        paths = {w: [start, w] for w in sorted(graph[start]) if w in members}
        queue = list(paths)
        while queue:
            v = queue.pop(0)
            if v == start:
                break
            for w in sorted(graph[v]):
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        cycles.append(paths.get(start) or [start, start])
    return cycles


def studio_or_streamlit_imports(graph: dict[str, set[str]], studio: str = "droidft.studio") -> list[str]:
    """'module -> target' for every module outside `studio` importing it, and every module
    importing Streamlit."""
    bad = []
    for module, targets in sorted(graph.items()):
        in_studio = module == studio or module.startswith(studio + ".")
        for target in sorted(targets):
            if target == "external:streamlit":
                bad.append(f"{module} -> streamlit")
            elif not in_studio and (target == studio or target.startswith(studio + ".")):
                bad.append(f"{module} -> {target}")
    return bad


def oversized(root: Path, folders=("droidft", "app"), limit: int = MAX_LINES,
              allowed: dict | None = None) -> list[str]:
    """'path: N lines' for every .py file over `limit` lines that is not allowed."""
    allowed = LARGE_MODULES if allowed is None else allowed
    out = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > limit and rel not in allowed:
                out.append(f"{rel}: {n} lines")
    return out


# ------------------------------------------------------------------------- the tree itself


@functools.lru_cache(maxsize=1)
def droidft_graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_no_import_cycles_in_droidft():
    cycles = find_cycles(droidft_graph())
    assert not cycles, "import cycles (move code to where it belongs):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def test_engine_never_imports_the_dashboard():
    graph = droidft_graph()
    assert "droidft.studio" in graph and "droidft.store" in graph  # the graph is the real tree
    bad = studio_or_streamlit_imports(graph)
    assert not bad, "the engine must not import droidft.studio or streamlit:\n" + "\n".join(bad)


def test_no_module_over_the_size_limit():
    big = oversized(ROOT)
    assert not big, (f"over {MAX_LINES} lines (split it where a real seam is, or add it to "
                     "LARGE_MODULES with a reason):\n" + "\n".join(big))


def test_allow_list_is_short_reasoned_and_still_needed():
    assert len(LARGE_MODULES) <= 5
    for rel, reason in LARGE_MODULES.items():
        path = ROOT / rel
        assert path.is_file(), f"{rel} is allow-listed but does not exist"
        assert len(reason.split()) >= 4, f"{rel} needs a real reason"
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n > MAX_LINES, f"{rel} has {n} lines now: remove it from LARGE_MODULES"


# ------------------------------------------------------------------------- the checkers can fail


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CYCLE_CASES = {
    "function-level, relative and absolute imports; TYPE_CHECKING left out": ({
        "pkg/__init__.py": "",
        "pkg/disk.py": "def need():\n    from .studio.x import estimate\n    return estimate\n",
        "pkg/studio/__init__.py": "",
        "pkg/studio/x.py": "from ..store import rows\n",
        "pkg/store.py": "import os\n\ndef write():\n    import pkg.disk\n",
        "pkg/ok.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import cyc\n",
        "pkg/cyc.py": "from . import ok\n",
    }, ["pkg.disk -> pkg.studio.x -> pkg.store -> pkg.disk"]),
    "a package re-exporting from a module that imports back": ({
        "pkg/__init__.py": "",
        "pkg/data/__init__.py": "from .validate import check\n",
        "pkg/data/validate.py": "from .. import jobs\n",
        "pkg/jobs.py": "class Runner:\n    def go(self):\n        from pkg.data import check\n",
    }, ["pkg.data -> pkg.data.validate -> pkg.jobs -> pkg.data"]),
}


@pytest.mark.parametrize("case", CYCLE_CASES)
def test_cycle_checker_finds_the_cycle(tmp_path, case):
    files, expected = CYCLE_CASES[case]
    cycles = find_cycles(import_graph(_write(tmp_path, files), "pkg"))
    assert [" -> ".join(c) for c in cycles] == expected


def test_layer_checker_finds_engine_importing_the_dashboard(tmp_path):
    root = _write(tmp_path, {
        "droidft/__init__.py": "",
        "droidft/studio/__init__.py": "from . import format\n",
        "droidft/studio/format.py": "def f():\n    import streamlit as st\n",
        "droidft/store.py": "def g():\n    from .studio.format import f\n",
        "droidft/data.py": "try:\n    import streamlit.testing\nexcept ImportError:\n    pass\n",
    })
    assert studio_or_streamlit_imports(import_graph(root)) == [
        "droidft.data -> streamlit", "droidft.store -> droidft.studio.format",
        "droidft.studio.format -> streamlit"]


def test_size_checker_finds_long_files_and_honours_the_allow_list(tmp_path):
    root = _write(tmp_path, {
        "droidft/small.py": "x = 1\n" * 10,
        "droidft/sub/big.py": "x = 1\n" * 501,
        "app/views/page.py": "x = 1\n" * 600,
    })
    assert oversized(root, allowed={}) == ["droidft/sub/big.py: 501 lines", "app/views/page.py: 600 lines"]
    assert oversized(root, allowed={"app/views/page.py": "reason"}) == ["droidft/sub/big.py: 501 lines"]


def test_bench_and_script_imports_exist():
    """bench/ and scripts/ do not run in CI, so an import they make that a move broke would
    only show when someone measures (bench_queue still imported droidft.demo_model)."""
    import importlib

    broken = []
    for folder in ("bench", "scripts"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("droidft"):
                    try:
                        module = importlib.import_module(node.module)
                    except ImportError as exc:
                        broken.append(f"{path.name}:{node.lineno}: {node.module} ({exc})")
                        continue
                    broken += [f"{path.name}:{node.lineno}: {node.module}.{a.name}" for a in node.names
                               if not hasattr(module, a.name) and importlib.util.find_spec(
                                   f"{node.module}.{a.name}") is None]
    assert not broken, "imports that no longer exist:\n" + "\n".join(broken)
