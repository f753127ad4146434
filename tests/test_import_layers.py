"""Imports point one way: the commands -> flows/ -> tasks/ (the steps) -> the library.

tasks/ and flows/ install as `tunesmith.tasks` and `tunesmith.flows` (pyproject's package-dir),
so that is what every import names; the bare `tasks`/`flows` only resolve from a checkout.

Read from the source (every import statement, at the top or inside a function, outside
`if TYPE_CHECKING:`; and `importlib.import_module` of a project module by name), so a new
upward import or a cycle fails here, naming the module and what it imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

# The commands: they start flows and run steps, so they may import anything.
COMMANDS = {"tunesmith.cli", "tunesmith.cli_datasets", "tunesmith.cli_registry",
            "tunesmith.tune_cli"}
# Known upward reads that stay, each with its reason: none today.
ALLOWED: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for package in ("tunesmith", "tasks", "flows"):
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if package != "tunesmith":
                name = f"tunesmith.{name}"
            found[name.removesuffix(".__init__")] = path
    return found


def layer(module: str) -> int:
    """3 commands, 2 flows, 1 steps, 0 the library."""
    if module in COMMANDS:
        return 3
    return {"tunesmith.flows": 2, "tunesmith.tasks": 1}.get(".".join(module.split(".")[:2]), 0)


def _import_nodes(tree: ast.AST) -> list[ast.AST]:
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)  # never run: a type, not a dependency
            continue
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Call):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
                names.add(str(arg.values[0].value) + "*")  # f"tunesmith.tasks.{step}": any step
    out = set()
    for name in names:
        if name.split(".")[0] in ("tasks", "flows"):
            out.add(name)  # the checkout-only name: unknown to an installed tunesmith
            continue
        if name.endswith("*"):
            if name.split(".")[0] == "tunesmith":
                out.add(name.rstrip(".*") + ".*")
            continue
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer(target.removesuffix(".*")) > layer(module) and (
                    module, target) not in ALLOWED:
                bad.append(f"{module} imports {target}")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in edges), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_a_layer_above_it():
    edges = graph()
    assert len(edges) > 60 and any(edges.values())
    assert not upward(edges), "imports that point up:\n" + "\n".join(upward(edges))


def test_steps_and_flows_are_imported_by_their_installed_name():
    bare = sorted(f"{m} imports {t}" for m, ts in graph().items() for t in ts
                  if t.split(".")[0] in ("tasks", "flows"))
    assert not bare, "use tunesmith.tasks / tunesmith.flows:\n" + "\n".join(bare)


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    edges = {"tunesmith.tune": {"tunesmith.tasks.train"},
             "tunesmith.tasks.train": {"tunesmith.tune"},
             "tunesmith.steps": {"tunesmith.tasks.*"},
             "tunesmith.flows.retrain": {"tunesmith.cli"}}
    assert upward(edges) == ["tunesmith.flows.retrain imports tunesmith.cli",
                             "tunesmith.steps imports tunesmith.tasks.*",
                             "tunesmith.tune imports tunesmith.tasks.train"]
    assert cycles(edges) == [["tunesmith.tasks.train", "tunesmith.tune"]]


def test_an_import_inside_a_function_counts_and_a_type_only_one_does_not(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from tunesmith.tasks.train import TrainResult\n"
                    "def f():\n    from tunesmith.tasks.clean import clean\n"
                    "    importlib.import_module(f'tunesmith.tasks.{step}')\n"
                    "    import flows.retrain\n")
    known = {"tunesmith.tasks.train": path, "tunesmith.tasks.clean": path}
    assert imports("tunesmith.m", path, known) == {
        "tunesmith.tasks.clean", "tunesmith.tasks.*", "flows.retrain"}
