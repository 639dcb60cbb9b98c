"""The documentation is checked like code: the site builds in strict mode, and every example in README.md and docs/
still works against the code it describes.

- `mkdocs build --strict` fails on a broken link or anchor, a nav entry without its page, a page left out of the nav.
- Every fenced `sh` line that starts with `python -m pipeline` (or `edge-pipeline`) is run in a cheap form, in this
  process: its overrides composed by Hydra's compose API, then planned (`--plan` commands through the same preview the
  command line prints), so a renamed recipe, device, key or stage parameter fails here. `python -m pipeline.<module>`
  lines must name a module with a `main`, and their arguments are parsed where the module has a parser.
- `yaml` recipes are checked against the stage types (type, parameter names) and the schema; `python` blocks are
  imported as modules (the stage example is then run in a real pipeline); `toml` blocks must parse.
- A block that cannot run here says so in an HTML comment right before it: `<!-- not-run: REASON -->` (skipped),
  `<!-- compose-only: REASON -->` (composed, not planned: e.g. a folder of your own), `<!-- expect-error: TEXT -->`
  (must be refused with TEXT).
Everything runs in-process (no pipeline subprocess but the site build), so the whole file takes seconds.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from omegaconf import MISSING, OmegaConf

from conftest import ROOT, compose_cfg
from pipeline.core import config
from pipeline.stages import ENTRY_POINT_GROUP, Stage, discover

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LANGUAGES = {"sh", "text", "yaml", "python", "toml"}
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
MARK = re.compile(r"<!--\s*(not-run|compose-only|expect-error):\s*(.*?)\s*-->\s*\Z", re.S)
README_MAX_LINES = 150


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    text: str
    mark: str | None = None  # not-run | compose-only | expect-error
    why: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        mark = MARK.search(text[max(0, m.start() - 400):m.start()])
        out.append(Block(page, text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2),
                         *(mark.groups() if mark else (None, ""))))
    return out


ALL = [b for p in PAGES for b in blocks(p)]


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(the line as written, its words) of every pipeline command in a shell block; continuation lines joined."""
    out = []
    for line in block.text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        module = words[2] if words[:2] == ["python", "-m"] and len(words) > 2 else ""
        if module == "pipeline" or module.startswith("pipeline.") or words[:1] == ["edge-pipeline"]:
            out.append((line.strip(), words))
    return out


COMMANDS = [(b, line, words) for b in ALL if b.lang == "sh" for line, words in commands(b)]


# --- the site ---------------------------------------------------------------------------------------------------------
def test_the_site_builds_in_strict_mode(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "site" / "stages" / "index.html").is_file()
    assert (tmp_path / "site" / "repo" / "bench" / "RESULTS" / "index.html").is_file()  # ../bench/RESULTS.md linked


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md grew: move the detail to a page under docs/"
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if not re.match(r"[a-z]+://", link):
            assert (ROOT / link.split("#")[0]).exists(), f"README.md links to {link}, which does not exist"
    assert "make run" in text and "make test" in text  # the two set-up commands; .ci/run calls `make test`
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_fence_names_its_language():
    bad = [f"{b.where}: ```{b.lang}" for b in ALL if b.lang not in LANGUAGES]
    assert not bad, f"give each fenced block one of {sorted(LANGUAGES)} (sh blocks are run): {bad}"


# --- commands ---------------------------------------------------------------------------------------------------------
def _expand(overrides: list[str]) -> list[list[str]]:
    """A multirun's jobs, enough to touch every swept value once: the first value of each sweep, then each other
    value of one sweep at a time."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else None for o in parsed]
    first = [f"{o.get_key_element()}={v[0]}" if v else o.input_line for o, v in zip(parsed, values)]
    jobs = [first]
    for i, (o, v) in enumerate(zip(parsed, values)):
        for other in (v or [])[1:]:
            jobs.append([*first[:i], f"{o.get_key_element()}={other}", *first[i + 1:]])
    return jobs


def _split_flags(words: list[str]) -> tuple[set[str], list[str]]:
    flags, overrides, i = set(), [], 0
    while i < len(words):
        w = words[i]
        if w in ("--cfg", "-c"):  # Hydra's --cfg job|hydra|all: print the composed config
            flags.add("--cfg")
            i += 2
            continue
        if w in ("--plan", "--resolve", "-m", "--multirun", "--help", "-h"):
            flags.add({"--multirun": "-m", "-h": "--help"}.get(w, w))
        elif w.startswith("-"):
            pytest.fail(f"{w}: a flag this test does not know; teach _split_flags what it does")
        else:
            overrides.append(w)
        i += 1
    return flags, overrides


def _check_run(words: list[str], block: Block, tmp_path: Path, capsys) -> None:
    """`python -m pipeline WORDS`, cheaply: --help prints the help; anything else is composed and planned."""
    from pipeline.app import prepare, preview

    flags, overrides = _split_flags(words)
    if "--help" in flags:
        from pipeline.cli.help import text

        help_text = text()
        assert not overrides and all(p.stem in help_text for p in (ROOT / "recipes").glob("*.yaml"))
        return
    jobs = _expand(overrides) if "-m" in flags else [overrides]
    for job in jobs:
        outputs = [] if any(o.startswith("paths.outputs=") for o in job) else [f"paths.outputs={tmp_path}"]
        try:
            cfg = compose_cfg([*job, *outputs])
            if block.mark == "compose-only":
                continue
            if "--plan" in flags:
                preview(cfg)
            else:
                prepare(cfg)
        except Exception as e:  # Hydra's composition errors and the planner's ConfigError alike
            if block.mark == "expect-error":
                assert block.why in str(e), f"{block.where}: refused, but not with {block.why!r}: {e}"
                return
            raise AssertionError(f"{block.where}: `{' '.join(words)}` no longer composes and plans: {e}") from e
    capsys.readouterr()
    assert block.mark != "expect-error", f"{block.where}: documented as refused ({block.why}), but it plans"


def _check_module(module: str, args: list[str]) -> None:
    """`python -m pipeline.MODULE ARGS`: the module exists with a `main`; its arguments are parsed where it can."""
    assert importlib.util.find_spec(module) is not None, f"no module {module}"
    mod = importlib.import_module(module)
    assert callable(getattr(mod, "main", None)), f"{module} has no main()"
    if module == "pipeline.tracking.compare":
        mod.parse(args)  # raises on an unknown key or value
    if module == "pipeline.cli.verify":
        assert args, "pipeline.cli.verify takes run folders"


def _check_console_script(words: list[str], block: Block, tmp_path: Path, capsys) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("scripts", {})
    assert "edge-pipeline" in scripts, "the docs show `edge-pipeline`, but pyproject.toml defines no such command"
    args = words[1:]
    if not args or args[0].startswith("-") or "=" in args[0]:  # a run, like python -m pipeline
        _check_run(args, block, tmp_path, capsys)
        return
    module, _, func = scripts["edge-pipeline"].partition(":")
    code = f"import sys; from {module} import {func} as f; sys.argv = ['edge-pipeline', {args[0]!r}, '--help']; f()"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{block.where}: `edge-pipeline {args[0]} --help` failed: {r.stderr[-2000:]}"


@pytest.mark.parametrize("block,line,words", COMMANDS, ids=[f"{b.where}:{w[2] if w[0] == 'python' else w[0]}"
                                                            for b, _, w in COMMANDS])
@pytest.mark.slow
def test_documented_command_still_works(block, line, words, tmp_path, capsys):
    if block.mark == "not-run":
        pytest.skip(f"{block.where}: {block.why}")
    if words[0] == "edge-pipeline":
        _check_console_script(words, block, tmp_path, capsys)
    elif words[2] == "pipeline":
        _check_run(words[3:], block, tmp_path, capsys)
    else:
        _check_module(words[2], words[3:])


def test_the_docs_show_commands_to_check():
    """The collection above found the examples (a change of fence or prompt style would silently check nothing)."""
    assert len(COMMANDS) >= 30
    assert {w[2] for _, _, w in COMMANDS if w[0] == "python"} >= {"pipeline", "pipeline.tracking.compare"}


# --- recipes, code, configuration -------------------------------------------------------------------------------------
def _import_block(block: Block, tmp_path: Path):
    """A python block as a module file of its own (a stage's cache key reads its module's source)."""
    name = f"docs_example_{block.page.stem.replace('-', '_')}_{block.line}"
    path = tmp_path / f"{name}.py"
    path.write_text(block.text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stage_classes(module) -> list[type[Stage]]:
    return [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Stage) and "type" in c.__dict__]


def _recipe_problems(recipe: dict, registry: dict[str, type[Stage]]) -> list[str]:
    problems = []
    generic = {}
    for cls in registry.values():
        if cls.implements:
            generic.setdefault(cls.implements[0], []).append(cls)
    for name, stage in (recipe.get("stages") or {}).items():
        kind = stage.get("type")
        classes = [registry[kind]] if kind in registry else generic.get(kind)
        if not classes:
            problems.append(f"stages.{name}: unknown stage type {kind!r}")
            continue
        known = {"type", "inputs"} | ({"format"} if kind in generic else set())
        known |= {f.name for c in classes for f in dataclasses.fields(c.Config)}
        problems += [f"stages.{name}.{k}: not a parameter of {kind!r}" for k in stage if k not in known]
    for entry in recipe.get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = key.replace("override", "").strip().strip("/")
                if not (ROOT / "conf" / group / f"{value}.yaml").is_file():
                    problems.append(f"defaults: no {group} named {value!r}")
    rest = {k: v for k, v in recipe.items() if k not in ("defaults", "stages")}
    try:
        OmegaConf.merge(OmegaConf.structured(config.PipelineConfig), rest)
    except Exception as e:
        problems.append(f"top-level keys: {e}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_code_examples_run_and_recipes_validate(page, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    extra: list[type[Stage]] = []  # stage types a python block of this page defines, for its yaml recipes
    checked = 0
    for block in blocks(page):
        if block.mark == "not-run" or block.lang not in ("python", "yaml", "toml"):
            continue
        checked += 1
        if block.lang == "python":
            extra += _stage_classes(_import_block(block, tmp_path))
        elif block.lang == "toml":
            doc = tomllib.loads(block.text)
            groups = (doc.get("project") or {}).get("entry-points") or {}
            assert not groups or set(groups) == {ENTRY_POINT_GROUP}, f"{block.where}: entry-point group {set(groups)}"
        else:
            recipe = yaml.safe_load(block.text)
            if isinstance(recipe, dict) and ("stages" in recipe or "defaults" in recipe):
                problems = _recipe_problems(recipe, discover(extra=extra))
                assert not problems, f"{block.where}: " + "; ".join(problems)
    if page.name == "extending.md":
        assert checked >= 3 and [c.type for c in extra] == ["file_size"]


def test_the_stage_example_runs_in_a_pipeline(tmp_path, monkeypatch, capsys):
    """docs/extending.md's stage, imported from its own file, runs after an imported ONNX model, as its recipe shows."""
    import onnx
    from onnx import TensorProto, helper

    from pipeline.app import run

    monkeypatch.syspath_prepend(str(tmp_path))
    python = next(b for b in blocks(DOCS / "extending.md") if b.lang == "python")
    (stage,) = _stage_classes(_import_block(python, tmp_path))
    # a 10-class "classifier" on 3x32x32 images: mean over the pixels, one matrix product
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0), helper.make_node("MatMul", ["m", "w"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
         helper.make_tensor("w", TensorProto.FLOAT, [3, 10], [0.1 * i for i in range(30)])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)  # what ORT 1.31 loads
    onnx.save(model, tmp_path / "model.onnx")
    recipe = yaml.safe_load(next(b for b in blocks(DOCS / "extending.md") if b.lang == "yaml").text)
    recipe["stages"]["mine"]["path"] = str(tmp_path / "model.onnx")
    cfg = compose_cfg(["recipe=tiny_int8", "device=pixel7", "tracking=none", "model.input_size=32", "~stages"],
                      tmp_path / "outputs")
    cfg.stages = recipe["stages"]
    summary = run(cfg, stages=[stage])
    capsys.readouterr()
    size = next(s for s in summary.stages if s.name == "size")
    kib = (tmp_path / "model.onnx").stat().st_size / 1024
    assert size.status == "ran" and size.metrics["mine.size"] == pytest.approx(kib, rel=0.01)
    assert size.metrics["mine.within_budget"] == 1.0  # a few hundred bytes against the Pixel 7's 20 MB


# --- reference pages against the code ---------------------------------------------------------------------------------
def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is MISSING or value == "???":
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def _sections(page: Path) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


@pytest.mark.parametrize("stage_type", sorted(c.type for c in discover().values()))
def test_stages_page_lists_every_parameter_with_its_default(stage_type):
    """docs/stages.md has a section per stage type whose table holds exactly its Config's fields; a default written as
    code must be the dataclass's (free text is allowed for long defaults)."""
    section = _sections(DOCS / "stages.md").get(stage_type)
    assert section is not None, f"docs/stages.md has no '## {stage_type}' section"
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]*) \|", section, flags=re.M)
    documented = {name: cell.strip() for name, cell in rows}
    fields = {f.name: f for f in dataclasses.fields(discover()[stage_type].Config)}
    assert set(documented) == set(fields), (f"{stage_type}: parameters documented but gone: "
                                            f"{sorted(set(documented) - set(fields))}; undocumented: "
                                            f"{sorted(set(fields) - set(documented))}")
    for name, cell in documented.items():
        code = re.fullmatch(r"`([^`]*)`", cell)
        expected = _default(fields[name])
        if code or expected == "required":
            assert (code.group(1) if code else cell) == expected, f"{stage_type}.{name}: documented {cell}, is {expected}"


def test_every_recipe_and_device_is_documented():
    recipes = (DOCS / "recipes.md").read_text()
    devices = (DOCS / "devices.md").read_text()
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        assert f"| `{path.stem}` |" in recipes, f"docs/recipes.md: recipe {path.stem} is missing from the table"
    for path in sorted((ROOT / "conf" / "device").glob("*.yaml")):
        assert f"`{path.stem}`" in devices, f"docs/devices.md: device {path.stem} is missing from the catalog"


def test_summary_json_page_holds_the_tables_the_types_generate():
    """docs/summary-json.md's field tables are the schema's own one-line docs (python -m pipeline.report.schema)."""
    from pipeline.report.schema import field_tables

    page = (ROOT / "docs" / "summary-json.md").read_text()
    inside = page.split("<!-- fields: begin -->\n", 1)[1].split("\n<!-- fields: end -->", 1)[0]
    assert inside == field_tables(), "regenerate the tables: python -m pipeline.report.schema"


@pytest.mark.parametrize("page", ["README.md", "docs/extending.md"])
def test_layout_section_names_every_package_folder_and_no_other(page):
    """The Layout section lists pipeline/'s sub-packages as they are: a folder added, renamed or removed shows here."""
    text = (ROOT / page).read_text()
    block = re.search(r"## Layout\n\n```text\n(.*?)```", text, flags=re.S)
    assert block, f"{page} has no Layout section with a text block"
    named = set(re.findall(r"^  ([a-z_]+)/", block.group(1), flags=re.M))
    folders = {p.name for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").is_file()}
    assert named == folders, f"{page}: listed but missing {sorted(named - folders)}; not listed {sorted(folders - named)}"


def test_every_source_path_the_docs_name_exists():
    """A page naming `pipeline/x.py` sends the reader to that file: after a move the page must follow."""
    gone = [f"{page.relative_to(ROOT)}: {m}" for page in [*DOCS.glob("*.md"), ROOT / "README.md"]
            for m in sorted(set(re.findall(r"pipeline/[A-Za-z0-9_/]+\.py", page.read_text())))
            if not (ROOT / m).is_file()]
    assert not gone, gone
