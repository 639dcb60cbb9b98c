"""The code and library parts of a task's cache key, derived from the source, never listed by hand.

A task's code is its stage module plus every `pipeline.*` module that module reaches: imports at any depth (lazy
imports inside functions too), module names in strings (`"pipeline.runtimes.measure"` run with `python -m`), and
registry entries (`"pipeline.models.mobilenet_v2:MobileNetV2"`), plus the data files (JSON, YAML, CSV, NumPy, gzip) beside
those modules. A registry (a module-level dict of names to "module[:attr]" strings: the model zoo, the runtimes by
format, the tasks, the data sets) is followed per entry, and only into the entries the task can reach: the names its
settings and parameters hold and the formats of the models it and its upstream stages handle. So one runtime's or
one zoo model's code is in the keys of the tasks that use it and in no other. A module that declares
`CACHE_KEY_EXEMPT = "<why>"` (the console's output routing) cannot change a result and is left out.

The key holds a digest per file, so a miss names the file(s) that changed. The library part is the versions of the
distributions providing every third-party module imported anywhere in that closure. Imports no ML framework.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import re
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterable

PKG_DIR = Path(__file__).resolve().parent.parent  # the pipeline package
DATA_SUFFIXES = (".json", ".yaml", ".yml", ".csv", ".npy", ".npz", ".gz")
EXEMPT = "CACHE_KEY_EXEMPT"
_DOTTED = re.compile(r"^(pipeline(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?::[A-Za-z_][A-Za-z0-9_.]*)?$")


def _module_file(name: str) -> Path | None:
    """The source file of a `pipeline.*` module (or package __init__) without importing it."""
    if name != "pipeline" and not name.startswith("pipeline."):
        return None
    if name == "pipeline":
        return PKG_DIR / "__init__.py"
    rel = Path(*name.split(".")[1:])
    for cand in (PKG_DIR / rel.with_suffix(".py"), PKG_DIR / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(PKG_DIR)
    except ValueError:
        return None
    parts = ["pipeline", *rel.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _registries(tree: ast.Module) -> tuple[dict[str, str], set[int]]:
    """{entry name: module} of every module-level registry dict, and the ids of its string nodes."""
    entries, nodes = {}, set()
    for stmt in tree.body:
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
        if not isinstance(value, ast.Dict) or not value.keys:
            continue
        pairs = list(zip(value.keys, value.values))
        if all(isinstance(k, ast.Constant) and isinstance(k.value, str) and isinstance(v, ast.Constant)
               and isinstance(v.value, str) and _DOTTED.match(v.value) for k, v in pairs):
            for k, v in pairs:
                entries[k.value] = _DOTTED.match(v.value).group(1)
                nodes.add(id(v))
    return entries, nodes


@lru_cache(maxsize=None)
def parse(path: Path, module: str | None) -> tuple[frozenset[str], dict[str, str], bool]:
    """(module names `path` reaches directly, its registry entries {name: module}, whether it is exempt).
    `from a import b` yields `a` and `a.b` (b may be a submodule); relative imports resolve against `module`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    registry, skip = _registries(tree)
    exempt = any(isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == EXEMPT for t in s.targets)
                 for s in tree.body)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            m = _DOTTED.match(node.value)
            if m:
                out.add(m.group(1))  # a module named for importlib or `python -m`
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and module:
                pkg = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            if base:
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return frozenset(out), registry, exempt


def imported_names(path: Path, module: str | None) -> frozenset[str]:
    """Every module name `path` reaches: its imports, module-name strings and all its registry entries."""
    names, registry, _ = parse(path, module)
    return names | frozenset(registry.values())


@lru_cache(maxsize=None)
def closure(starts: tuple[Path, ...], reach: frozenset[str] | None) -> tuple[frozenset[Path], frozenset[str]]:
    """(pipeline source files, third-party top-level module names) reachable from `starts`. Registry entries are
    followed when their name is in `reach` (None: every entry)."""
    files: set[Path] = set()
    external: set[str] = set()
    todo = list(starts)
    while todo:
        f = todo.pop()
        if f in files:
            continue
        names, registry, exempt = parse(f, _module_name(f))
        if exempt and f not in starts:
            continue
        files.add(f)
        followed = {m for k, m in registry.items() if reach is None or k in reach}
        for name in names | followed:
            top = name.split(".")[0]
            if top != "pipeline":
                if top not in sys.stdlib_module_names and not top.startswith("_"):
                    external.add(top)
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                mf = _module_file(".".join(parts[:i]))
                if mf is not None and mf not in files:
                    todo.append(mf)
    return frozenset(files), frozenset(external)


def source_file(cls: type) -> Path:
    return Path(inspect.getsourcefile(cls)).resolve()


def starts_of(cls: type, extra_modules: Iterable[str] = ()) -> tuple[Path, ...]:
    return tuple(sorted({source_file(cls), *(f for m in extra_modules if (f := _module_file(m)) is not None)}))


def code_files(cls: type, reach: frozenset[str] | None = None, extra_modules: Iterable[str] = ()) -> list[Path]:
    """The files whose content decides a task's result: its stage's module and `extra_modules` (the data loaders
    when it reads the data set), every pipeline module they reach, and the data files beside those modules."""
    files, _ = closure(starts_of(cls, extra_modules), reach)
    data = {p for f in files if f.is_relative_to(PKG_DIR)
            for p in f.parent.iterdir() if p.suffix in DATA_SUFFIXES and p.is_file()}
    return sorted(files | data)


def _name(p: Path) -> str:
    # Files outside the package (plug-ins, tests) are named by file name only, so that the key does not depend on
    # where a checkout sits.
    return str(p.relative_to(PKG_DIR)) if p.is_relative_to(PKG_DIR) else p.name


def code_digests(cls: type, reach: frozenset[str] | None = None, extra_modules: Iterable[str] = ()) -> dict[str, str]:
    """{file: sha256 prefix} of `code_files`: the key changes with any of them, and a miss can name which."""
    return {_name(p): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in code_files(cls, reach, extra_modules)}


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions(cls: type, reach: frozenset[str] | None = None, extra_modules: Iterable[str] = ()) -> dict[str, str]:
    """Versions of the distributions a task can reach: those providing the third-party modules imported anywhere in
    its code closure, plus any its stage declares in `libraries` (a distribution used without an import of its own)."""
    _, external = closure(starts_of(cls, extra_modules), reach)
    return _versions(external, getattr(cls, "libraries", ()))


def _versions(external: Iterable[str], declared: Iterable[str] = ()) -> dict[str, str]:
    dists = set(declared)
    for top in external:
        dists.update(_distributions().get(top, ()))
    norm = {re.sub(r"[-_.]+", "-", d).lower() for d in dists}
    return {d: _version(d) for d in sorted(norm)}


def module_code(modules: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """({file: sha256 prefix}, {distribution: version}) of the import closure of `modules`: the code key of a step
    a library caches itself (the optimizer's trials), changing with that code only, not with its stage's."""
    files, external = closure(tuple(sorted({f for m in modules if (f := _module_file(m)) is not None})), None)
    return ({_name(p): hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted(files)}, _versions(external))


def strings_in(obj) -> set[str]:
    """Every string value in nested settings / parameters: the registry names a task can reach through them."""
    if isinstance(obj, str):
        return {obj}
    if isinstance(obj, dict):
        return {s for v in obj.values() for s in strings_in(v)}
    if isinstance(obj, (list, tuple, set)):
        return {s for v in obj for s in strings_in(v)}
    return set()
