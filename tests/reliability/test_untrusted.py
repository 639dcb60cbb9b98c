"""Untrusted files and names: nothing user-supplied is unpickled, and artifact, stage, recipe, device and experiment
names cannot make the pipeline write (or publish) outside its run folder. (Recipes themselves are code: `_target_`
imports and runs Python, so a recipe is trusted like code; these tests are about data, models and names.)"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from pipeline.core.cache import Cache
from rel_helpers import assert_nothing_partial, cache_state, compose_stub, outcome


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.bad_input
@pytest.mark.parametrize("how,target,fragment", [
    ("artifact", "/etc/hostname", "returned its artifact '/etc/hostname' outside its work folder"),
    ("artifact", "../../../../escaped.bin", "outside its work folder"),
    ("extra_file", "../../../../escaped.txt", "returned an extra file '../../../../escaped.txt' outside its work folder"),
    ("symlink", "/etc/passwd", "wrote a symbolic link 'link.bin' (to /etc/passwd)"),
])
@pytest.mark.slow
def test_stage_cannot_publish_outside_its_folder(tmp_path, how, target, fragment):
    outputs = tmp_path / "outputs"
    cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=local")
    cfg.stages = {"evil": {"type": "rel_mischief", "how": how, "target": target}}
    code, msg, _ = outcome(cfg)
    assert code == 1, msg
    assert fragment in msg and "stages must write" in msg
    assert_nothing_partial(outputs, failed="evil")
    assert _listing(tmp_path) <= {"outputs", *("outputs/" + p for p in _listing(outputs))}
    assert not list(tmp_path.rglob("escaped*"))


def _run_chain(outputs: Path):
    cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=none", "stages.a.seconds=0", "stages.b.seconds=0",
                       "stages.c.seconds=0", "stages.d.seconds=0")
    return outcome(cfg)


@pytest.mark.parametrize("tamper", ["artifact path", "listed file", "added file", "absolute path"])
@pytest.mark.slow
def test_tampered_cache_entry_is_not_trusted(tmp_path, tamper):
    """An entry whose manifest names paths outside it, or whose files changed, is treated as missing and rebuilt."""
    outputs = tmp_path / "outputs"
    (tmp_path / "secret.txt").write_text("not for the run folder")
    code, msg, first = _run_chain(outputs)
    assert code == 0, msg
    key = next(s["cache_key"] for s in first["stages"] if s["name"] == "b")
    entry = outputs / "cache" / "entries" / key
    manifest = json.loads((entry / "entry.json").read_text())
    if tamper == "artifact path":
        manifest["artifact"]["path"] = "../../../../../secret.txt"
    elif tamper == "listed file":
        manifest["files"]["../../../../../secret.txt"] = {"size": 22, "sha256": "0" * 64}
    elif tamper == "absolute path":
        manifest["extra_files"] = [str(tmp_path / "secret.txt")]
    if tamper == "added file":
        (entry / "out" / "planted.bin").write_bytes(b"planted")
    else:
        (entry / "entry.json").write_text(json.dumps(manifest))
    assert Cache(outputs / "cache").lookup(key) is None
    code, msg, second = _run_chain(outputs)
    assert code == 0, msg
    status = {s["name"]: s["status"] for s in second["stages"]}
    assert status["a"] == "reused" and status["b"] == "ran"
    published = Path(second["run_dir"]) / "artifacts"
    assert "not for the run folder" not in "".join(p.read_text(errors="ignore") for p in published.rglob("*")
                                                   if p.is_file())
    assert Cache(outputs / "cache").lookup(key) is not None and cache_state(outputs)["corrupt"] == []


@pytest.mark.bad_input
def test_recipe_name_escaping_the_run_folder(tmp_path):
    """`recipe=../recipes/tiny_int8` loads the file through the symlinked group, but its name would be a path."""
    out = run_cli("recipe=../recipes/tiny_int8", f"paths.outputs={tmp_path / 'outputs'}", cwd=tmp_path)
    msg = out.stdout + out.stderr
    assert out.returncode == 2, msg
    assert "recipe" in msg and "cannot be used as a file name" in msg and "Traceback" not in msg
    assert list(tmp_path.iterdir()) == []


def test_experiment_name_cannot_write_outside_outputs(tmp_path):
    outputs = tmp_path / "outputs"
    cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=local", "tracking.experiment=../../../escaped",
                       "stages.a.seconds=0", "stages.b.seconds=0", "stages.c.seconds=0", "stages.d.seconds=0")
    code, msg, summary = outcome(cfg)
    assert code == 0, msg
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]
    assert not list(tmp_path.parent.glob("escaped*")) and not list(outputs.parent.parent.glob("escaped*"))


# Patterns that would unpickle (run code from) a file: none may appear in the package. Keras: safe_mode stays on.
UNSAFE = [
    (r"torch\.load\((?![^)]*weights_only\s*=\s*True)", "torch.load without weights_only=True"),
    (r"\bpickle\.loads?\(", "pickle.load"),
    (r"\b(cloudpickle|dill|joblib)\.loads?\(", "a pickle-based loader"),
    (r"allow_pickle\s*=\s*True", "numpy allow_pickle=True"),
    (r"safe_mode\s*=\s*False", "Keras safe_mode=False"),
    (r"\bmarshal\.loads?\(", "marshal.load"),
]


def test_nothing_in_the_package_unpickles_user_files():
    found = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        text = path.read_text()
        for pattern, what in UNSAFE:
            for m in re.finditer(pattern, text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert found == [], "\n".join(found)
