"""The shape of the package: stages are adapters over a library (none imports another), and no module of pipeline/
takes part in an import cycle, counting imports inside functions too (a lazy import still couples two modules)."""
from __future__ import annotations

from pathlib import Path

from conftest import ROOT
from pipeline.core import codekey

PKG = ROOT / "pipeline"


def module_name(path: Path) -> str:
    return codekey._module_name(path)


def imports_of(path: Path) -> set[str]:
    """The pipeline modules `path` imports (a name that is a module's attribute counts as that module). Registry
    entries ("pipeline.models.detector:CenterNetLite") are looked up by name when used, not imported: not counted."""
    out = set()
    names, _registry, _exempt = codekey.parse(path, module_name(path))
    for name in names:
        if codekey._module_file(name) is not None:
            out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    g = {}
    for name, path in mods.items():
        g[name] = {i for i in imports_of(path) if i in mods and i != name}
    return g


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components of more than one module are cycles."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in g:
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_stage_module_imports_another_stage_module():
    offenders = []
    for path in sorted((PKG / "stages").glob("*.py")):
        name = module_name(path)
        for imp in imports_of(path):
            if imp.startswith("pipeline.stages.") and imp not in ("pipeline.stages.base", name):
                offenders.append(f"{path.name} imports {imp}")
    assert not offenders, "stage modules are adapters; share code through a library module:\n" + "\n".join(offenders)


def test_pipeline_has_no_import_cycle():
    cycles = strongly_connected(graph())
    assert not cycles, "import cycles in pipeline/:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_core_path_for_core_ml_has_no_torchscript():
    for rel in ("convert/coreml.py", "stages/export_coreml.py", "runtimes/coreml_rt.py"):
        assert "torch.jit" not in (PKG / rel).read_text(), f"{rel} uses TorchScript; convert from torch.export"
