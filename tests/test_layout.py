"""The package's shape: the import graph of going_modular (every import, also those inside functions)
has no cycle, the serving wing imports nothing of the training wing, and no file outside tests/
puts tests/ on sys.path."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "going_modular"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the going_modular modules it imports anywhere in its source (module level or not)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.level and node.module else node.module or package
                # `from pkg import mod` imports the module pkg.mod; `from mod import name`, the module mod
                edges |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions_and_finds_cycles():
    graph = import_graph()
    assert "going_modular.deploy.batch.ray_engine" in graph["going_modular.deploy.batch.__main__"]  # in main()
    assert "going_modular.eager" in graph["going_modular"]  # inside the registered loader
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_going_modular_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_serving_wing_imports_nothing_of_the_training_wing():
    graph = import_graph()
    serving = [m for m in graph if m.startswith("going_modular.deploy")]
    assert len(serving) > 20  # core, web/, batch/, stream/, gradio_app, the aliases
    outside = {m: sorted(e for e in graph[m] if not e.startswith("going_modular.deploy")) for m in serving}
    assert {m: e for m, e in outside.items() if e} == {}


def test_the_serving_modes_depend_only_on_the_core():
    """web/, batch/ and stream/ import the core and themselves, never one another."""
    graph = import_graph()
    modes = ("web", "batch", "stream")
    for mode in modes:
        prefix = f"going_modular.deploy.{mode}"
        for module in (m for m in graph if m.startswith(prefix)):
            others = [e for e in graph[module] if any(e.startswith(f"going_modular.deploy.{o}") for o in modes)
                      and not e.startswith(prefix)]
            assert others == [], module


def test_no_file_outside_tests_puts_tests_on_sys_path():
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py", "*.ipynb"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"sys\.path\.(insert|append)\(.*[\"'/]tests[\\\"'/]")  # also via Path(...) / "tests"
    offenders = [f for f in files if not f.startswith("tests/") and pattern.search((ROOT / f).read_text())]
    for line in ('sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))', r'"sys.path.insert(0, \"tests\")\n"'):
        assert pattern.search(line), line  # the pattern bites, in a .py file and in a notebook's JSON
    assert offenders == []
