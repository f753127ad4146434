"""The code a step depends on: the project modules it imports, found by reading the source.

A step's code is `tasks/<step>.py` and every project module it imports (at the top or
inside a function, transitively, with the packages' `__init__.py` that importing runs),
plus the task type's module and what the protocol functions in the step's declared `uses`
(tunesmith/steps.py) import. Only those protocol functions count: the task module's serving
code imports the registry, and a change there must not retrain. Modules imported by name at run
time (`importlib`) are not followed, which is how the task type is picked per dataset.
A file a module hands MLflow as a model's code (`SERVED_CODE = Path(__file__).with_name(
"served.py")`, never imported: served models run without tunesmith) counts with that module.

The Prefect cache key hashes these files and `dvc.yaml` lists them as deps, so both re-run
a step when, and only when, code it runs changed.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout holding tunesmith/ and tasks/
# Installed as tunesmith.tasks and tunesmith.flows (pyproject's package-dir), kept at the
# checkout's top level; a built wheel has them under tunesmith/ instead.
MAPPED = {"tunesmith.tasks": "tasks", "tunesmith.flows": "flows"}


def module_path(module: str) -> Path | None:
    """The file of a project module, or None if `module` is not one of ours."""
    if module.split(".")[0] != "tunesmith":
        return None
    parts = module.split(".")
    folder = MAPPED.get(".".join(parts[:2]))
    if folder and (ROOT / folder / "__init__.py").is_file():
        parts = [folder, *parts[2:]]
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imports_in(nodes: list[ast.AST], module: str) -> set[str]:
    """Project modules imported anywhere inside `nodes` (relative imports resolved)."""
    package = module if module_path(module) and module_path(module).name == "__init__.py" \
        else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(nodes):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # `from pkg import submodule` runs only pkg's top level (a parent, see
            # module_closure); `from pkg import name` uses pkg's own code.
            subs = {f"{base}.{alias.name}" for alias in node.names}
            found.update(m for m in subs if module_path(m) is not None)
            if any(module_path(m) is None for m in subs):
                found.add(base)
    return {m for m in found if module_path(m) is not None}


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _import_nodes(nodes: list[ast.AST],
                  in_functions: bool = True) -> list[ast.Import | ast.ImportFrom]:
    """The import statements inside `nodes` (with `in_functions=False`, not those inside a
    function: what importing the module runs), minus those in `if TYPE_CHECKING:` blocks
    (never run, so not a dependency). A stack, not nested generators: those cost a frame per
    level for every node, 2/3 of the 0.37 s the seven steps' keys took (2026-12-03)."""
    found, todo = [], list(nodes)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
        elif in_functions or not isinstance(node, FUNCTIONS):
            todo.extend(ast.iter_child_nodes(node))
    return found


@functools.cache
def _module_imports(module: str) -> frozenset[str]:
    """Project modules imported anywhere in `module`'s file."""
    return frozenset(_imports_in([_tree(module_path(module))], module))


def _with_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@functools.cache
def _top_imports(module: str) -> frozenset[str]:
    """Project modules `module`'s top level imports (not those inside its functions)."""
    nodes = _import_nodes(list(_tree(module_path(module)).body), in_functions=False)
    return frozenset(_imports_in(nodes, module))


@functools.cache
def module_closure(module: str) -> frozenset[str]:
    """`module` and every project module it imports, transitively, with the packages above
    each. A package reached only as the parent of a submodule counts with what its top level
    imports: importing `pkg.sub` runs pkg/__init__.py's top level, not its functions (a task
    package's serving functions import the registry; its training submodules must not)."""
    used: set[str] = set()  # code that runs: every import in the file counts
    top: set[str] = set()  # modules whose top level runs (a parent, what a parent imports)
    todo = [(module, True)]
    while todo:
        current, whole = todo.pop()
        if current in used or (not whole and current in top) or module_path(current) is None:
            continue
        (used if whole else top).add(current)
        todo.extend((m, whole) for m in (_module_imports if whole else _top_imports)(current))
        todo.extend((parent, False) for parent in _with_parents(current) - {current})
    return frozenset(used | top)


def function_closure(module: str, functions: tuple[str, ...]) -> frozenset[str]:
    """What calling `functions` of `module` imports: its top-level imports, the imports in
    those functions and in the module's own functions they call, each expanded fully. A
    function the module re-exports (`from pkg.shared import f as f`, how text and image
    classification share theirs) is followed into its own module the same way."""
    tree = _tree(module_path(module))
    defs = {n.name: n for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    reexported = {alias.asname or alias.name: (n.module, alias.name) for n in tree.body
                  if isinstance(n, ast.ImportFrom) and not n.level and _is_reexport(n)
                  for alias in n.names}
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
           and not (isinstance(n, ast.ImportFrom) and not n.level and _is_reexport(n))]
    wanted, todo = set(), [f for f in functions if f in defs]
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        used = {n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name)}
        todo.extend(used & set(defs) - wanted)
    imported = _imports_in(top + [defs[n] for n in wanted], module)
    out: set[str] = set(_with_parents(module))
    above = {name for parent in _with_parents(module) - {module}
             for name in _top_imports(parent)}  # what importing `module` runs first
    for name in imported:
        out |= module_closure(name)
    out |= {m for name in above | {s for s, _ in reexported.values()}
            for m in _top_closure(name)}
    for source, name in set(reexported.values()):
        if name in functions:
            out |= function_closure(source, (name,))
    return frozenset(m for m in out if module_path(m) is not None)


@functools.cache
def _top_closure(module: str) -> frozenset[str]:
    """What importing `module` runs: its top level, its parents', and theirs, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for name in _with_parents(current):
            if name not in seen and module_path(name) is not None:
                seen.add(name)
                todo.extend(_top_imports(name))
    return frozenset(seen)


def _is_reexport(node: ast.ImportFrom) -> bool:
    """`from project.module import f as f, g as g`: functions passed on under their own
    names (the explicit re-export form), not submodules."""
    return module_path(node.module or "") is not None and all(
        alias.asname == alias.name and module_path(f"{node.module}.{alias.name}") is None
        for alias in node.names)


@functools.cache
def served_code(module: str) -> frozenset[Path]:
    """The files `module` names at its top level as `Path(__file__).with_name("x.py")`: code
    it gives MLflow to log as a model (objectives/*/registering.py's SERVED_CODE)."""
    path = module_path(module)
    found = set()
    for node in _tree(path).body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
                and value.func.attr == "with_name" and ast.unparse(value.func.value) \
                == "Path(__file__)" and value.args and isinstance(value.args[0], ast.Constant):
            found.add(path.with_name(str(value.args[0].value)))
    return frozenset(f for f in found if f.suffix == ".py" and f.is_file())


def step_files(step: str, task_module: str, uses: tuple[str, ...]) -> list[str]:
    """Sorted project-relative paths of the code `step` runs for a task type (see above)."""
    modules = module_closure(f"tunesmith.tasks.{step}") | function_closure(task_module, uses)
    files = {module_path(m) for m in modules}.union(*(served_code(m) for m in modules))
    return sorted({f.relative_to(ROOT).as_posix() for f in files})


def toplevel_files(modules: list[str]) -> list[str]:
    """Sorted paths of what importing `modules` runs (function-level imports not followed)."""
    found = set().union(*(_top_closure(m) for m in modules))
    return sorted({module_path(m).relative_to(ROOT).as_posix() for m in found})
