"""Where a `module:function` or `script.py:name` factory's code lives, found without running any of it.

`pipeline validate` and `--dry-run` must not run a config's code (README, "A config cannot"), yet
`read_iterable` wants its factory checked and its source in the step's fingerprint. So the module is
located with the import system's finders (which read directories, never modules), its source parsed
with `ast`, and a name a module only re-exports (`from .rows import make_rows`) followed to the file
that defines it: editing that file must re-run the step, as it did when the fingerprint imported the
function to ask where it was defined.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
from pathlib import Path

from pipeline.errors import ParamError
from pipeline.files import describe_path

FACTORY_FORM = "'module:function' or 'path/to/script.py:name'"
# Re-exports followed at most (a package's __init__ importing from a submodule is one).
_MAX_HOPS = 8
# A top-level call to one of these can bind names that no statement shows.
_DYNAMIC = frozenset({"globals", "setattr", "exec", "eval", "vars"})


def split_spec(spec: str) -> tuple[str, str]:
    target, sep, attr = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not target or not attr:
        raise ParamError("factory", f"expects {FACTORY_FORM}, got {spec!r}")
    return target, attr


def find_module(dotted: str) -> importlib.machinery.ModuleSpec:
    """The spec of `dotted`, looked up one package level at a time: a top-level name with `find_spec` (which
    imports nothing for it), a submodule with the path finder in its package's folders (`find_spec` of a
    dotted name would import, i.e. run, its parents)."""
    parts, found = dotted.split("."), None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        found = importlib.util.find_spec(name) if depth == 1 else importlib.machinery.PathFinder.find_spec(
            name, found.submodule_search_locations or [])
        if found is None:
            raise ParamError("factory", f"cannot import '{dotted}': no module named '{name}' on the Python path")
    return found


def _source(spec: importlib.machinery.ModuleSpec) -> Path | None:
    origin = spec.origin
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


def _parse(source: Path) -> ast.Module:
    try:
        return ast.parse(source.read_bytes(), filename=str(source))
    except SyntaxError as exc:
        raise ParamError("factory", f"does not parse: {exc.msg} at line {exc.lineno}",
                         file=describe_path(source)) from None


def defined_names(tree: ast.Module) -> set[str] | None:
    """Names the module's top level may bind, generously (a name wrongly counted is caught when the step
    imports the module; one wrongly missed would refuse a working factory). None when it cannot be told
    without running the module: `import *`, a module `__getattr__`, or a top-level `globals()`/`setattr`/`exec`."""
    names: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            stack.extend(node.decorator_list)
            continue  # its body runs later, in its own scope (a `global` in it is taken below)
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC:
            return None
        stack.extend(ast.iter_child_nodes(node))
    names.update(n for g in ast.walk(tree) if isinstance(g, ast.Global) for n in g.names)
    return None if "__getattr__" in names else names


def _imported_from(tree: ast.Module, attr: str, module: str | None, is_package: bool) -> tuple[str, str] | None:
    """(module, name) that `from module import name [as attr]` in `tree` binds `attr` to, absolute; None if no
    such import (or a relative one in a script, which has no package)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            if (alias.asname or alias.name) != attr:
                continue
            if node.level == 0:
                return node.module, alias.name
            if module is None:
                return None
            package = module if is_package else module.rpartition(".")[0]
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
            if len(base) < 1:
                return None
            return ".".join(base + ([node.module] if node.module else [])), alias.name
    return None


def factory_sources(spec: str) -> list[Path]:
    """The files the factory's code is in: the module or script named, then the file each re-export comes from
    (empty for a compiled or built-in module)."""
    target, attr = split_spec(spec)
    if target.endswith(".py"):
        if not Path(target).is_file():
            raise ParamError("factory", "no such script", file=describe_path(target))
        source, module, is_package = Path(target), None, False
    else:
        found = find_module(target)
        source, module, is_package = _source(found), target, found.submodule_search_locations is not None
    files: list[Path] = []
    while source is not None and source not in files and len(files) < _MAX_HOPS:
        files.append(source)
        origin = _imported_from(_parse(source), attr, module, is_package)
        if origin is None or not origin[0]:
            break
        try:
            found = find_module(origin[0])
        except ParamError:
            break  # the import fails when the step runs, and says so then
        attr, module, is_package = origin[1], origin[0], found.submodule_search_locations is not None
        source = _source(found)
    return files


def check_factory(spec: str) -> None:
    """What `pipeline validate` can know of a factory without running it: the module or script exists,
    parses, and may bind the name."""
    sources = factory_sources(spec)
    if not sources:
        return  # a compiled module: its names are known only by importing it, when the step runs
    target, attr = split_spec(spec)
    names = defined_names(_parse(sources[0]))
    if names is None or attr in names or (attr.startswith("__") and attr.endswith("__")):
        return
    if sources[0].name == "__init__.py" and (sources[0].parent / f"{attr}.py").is_file():
        return  # a submodule of the package
    shown = sorted(n for n in names if not n.startswith("_"))
    raise ParamError("factory", f"'{target}' has no '{attr}'; it defines: {', '.join(shown) or 'nothing'}")
