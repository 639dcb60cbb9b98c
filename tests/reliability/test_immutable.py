"""Immutable results: a cache entry and the run folders it was published into share no bytes (copy or reflink, never a
hard link), entry files are read-only, a run folder can be checked against its summary.json, and cache.force replaces
an entry only under its lock. Real files; a real XFS loop mount for the reflink case where the test runs as root."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT
from rel_helpers import compose_stub, outcome
from pipeline.core import cache as cache_mod, runfiles
from pipeline.core.cache import Cache
from pipeline.core.runfiles import publish, verify_run

pytestmark = pytest.mark.bad_input


def _entry(root: Path, key: str = "k" * 64, data: bytes = b"model bytes" * 1000) -> cache_mod.Entry:
    c = Cache(root)
    work = c.workdir(key)
    (work / "out" / "model.bin").write_bytes(data)
    return c.commit(key, work, {"artifact": {"path": "model.bin", "format": "torch", "precision": "fp32"}})


def _flip(p: Path) -> None:
    """Flip bytes in place the way a disk fault or a stray write would (root ignores the read-only bit; so does
    anyone who chmods it back)."""
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xfe\xfd")


def test_entry_files_are_read_only(tmp_path):
    e = _entry(tmp_path / "cache")
    mode = (e.out / "model.bin").stat().st_mode
    assert mode & 0o222 == 0, oct(mode)


def test_publish_copies_never_hard_links(tmp_path):
    e = _entry(tmp_path / "cache")
    src = e.out / "model.bin"
    dest = tmp_path / "run" / "artifacts" / "a" / "model.bin"
    how = publish(src, dest)
    assert how in ("copy", "reflink")
    assert os.stat(src).st_ino != os.stat(dest).st_ino and os.stat(src).st_nlink == 1
    assert dest.stat().st_mode & 0o222 == 0  # the run folder's copy is read-only too
    _flip(dest)  # the run folder's file is damaged: the entry is not
    assert Cache(tmp_path / "cache").lookup(e.key) is not None
    _flip(src)  # the entry is damaged: the run folder's copy is not
    assert dest.read_bytes()[10:13] == b"\xff\xfe\xfd" and Cache(tmp_path / "cache").lookup(e.key) is None
    assert [p.name for p in dest.parent.iterdir()] == ["model.bin"]  # no temporary file left


@contextlib.contextmanager
def _xfs(where: Path):
    """A 320 MB XFS file system with reflinks, loop-mounted (root only)."""
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs"):
        pytest.skip("needs root and mkfs.xfs (apt-get install xfsprogs) to mount a reflink-capable file system")
    img = where.with_suffix(".img")
    where.mkdir(parents=True)
    with open(img, "wb") as f:
        f.truncate(320 << 20)
    r = subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(img)], capture_output=True, text=True)
    m = r.returncode == 0 and subprocess.run(["mount", "-o", "loop", str(img), str(where)], capture_output=True)
    if not m or m.returncode != 0:
        img.unlink()
        pytest.skip(f"cannot loop-mount an XFS image here: {r.stderr.strip() or (m.stderr.decode() if m else '')}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)
        img.unlink()


def test_publish_reflinks_where_the_file_system_can(tmp_path):
    with _xfs(tmp_path / "xfs") as fs:
        e = _entry(fs / "cache", data=os.urandom(4 << 20))
        dest = fs / "run" / "model.bin"
        assert publish(e.out / "model.bin", dest) == "reflink"
        _flip(dest)  # copy-on-write: the clone's write leaves the entry's blocks alone
        assert Cache(fs / "cache").lookup(e.key) is not None


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "artifacts" / "a").mkdir(parents=True)
    (run / "artifacts" / "a" / "model.bin").write_bytes(b"m" * 100)
    pkg = run / "artifacts" / "b" / "model.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "weights.bin").write_bytes(b"w" * 50)
    arts = [{"name": "a", "path": "artifacts/a/model.bin"}, {"name": "b", "path": "artifacts/b/model.mlpackage"}]
    for a in arts:
        a["sha256"] = runfiles.path_sha256(run / a["path"])
    (run / "summary.json").write_text(json.dumps({"artifacts": arts}))
    return run


def test_verify_run_finds_a_modified_or_missing_artifact(tmp_path):
    run = _run_folder(tmp_path)
    assert verify_run(run) == []
    (run / "artifacts" / "a" / "model.bin").write_bytes(b"m" * 99 + b"x")
    (run / "artifacts" / "b" / "model.mlpackage" / "Data" / "weights.bin").unlink()
    problems = verify_run(run)
    assert len(problems) == 2
    assert "a: artifacts/a/model.bin was modified: sha256" in problems[0]
    assert "b: artifacts/b/model.mlpackage was modified" in problems[1]
    shutil.rmtree(run / "artifacts" / "b")
    assert "b: artifacts/b/model.mlpackage is missing" in verify_run(run)[1]
    (run / "summary.json").unlink()
    assert "summary.json: missing: the run did not finish" in verify_run(run)[0]


def test_verify_run_refuses_paths_outside_the_run_folder(tmp_path):
    run = _run_folder(tmp_path)
    (run / "summary.json").write_text(json.dumps({"artifacts": [{"name": "x", "path": "../../etc/passwd",
                                                                 "sha256": "0" * 64}]}))
    assert "not a relative path inside the run folder" in verify_run(run)[0]


def test_verify_command(tmp_path):
    run = _run_folder(tmp_path)
    cmd = [sys.executable, "-m", "pipeline.cli", "verify", str(run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0 and f"{run}: ok" in ok.stdout, ok.stdout + ok.stderr
    (run / "artifacts" / "a" / "model.bin").write_bytes(b"changed")
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 1 and "was modified" in bad.stdout and "re-run the recipe" in bad.stdout
    none = subprocess.run([sys.executable, "-m", "pipeline.cli", "verify"], capture_output=True, text=True, env=env)
    assert none.returncode == 2 and "name a run folder" in none.stderr


def test_invalidate_waits_for_the_entry_lock(tmp_path):
    """cache.force: another process holding the key's lock (computing or committing it) delays the removal."""
    e = _entry(tmp_path / "cache")
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from pipeline.core.cache import Cache
with Cache({str(tmp_path / 'cache')!r}).lock({e.key!r}):
    print("held", flush=True)
    time.sleep(1.5)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.perf_counter()
        assert Cache(tmp_path / "cache").invalidate(e.key) is True
        waited = time.perf_counter() - t
    finally:
        holder.wait(timeout=30)
    assert waited > 0.8, f"invalidate did not wait for the lock ({waited:.2f} s)"
    assert not e.dir.exists() and Cache(tmp_path / "cache").invalidate(e.key) is False


def test_invalidate_inside_the_lock_does_not_deadlock(tmp_path):
    e = _entry(tmp_path / "cache")
    c = Cache(tmp_path / "cache")
    done = threading.Event()

    def forced():
        with c.lock(e.key):
            c.invalidate(e.key)
            _entry(tmp_path / "cache", e.key, b"new bytes")  # commit also locks: re-entrant
        done.set()

    threading.Thread(target=forced, daemon=True).start()
    assert done.wait(10), "deadlock: the lock is not re-entrant"
    assert (c.lookup(e.key).out / "model.bin").read_bytes() == b"new bytes"


def _last_summary(outputs: Path) -> dict:
    return json.loads(sorted((outputs / "runs").rglob("summary.json"), key=lambda p: p.stat().st_mtime)[-1].read_text())


def test_a_finished_runs_model_does_not_change_when_its_cache_entry_does(tmp_path):
    """Bytes flipped in a cache entry: the cache rebuilds it, and the earlier run's folder still verifies."""
    outputs = tmp_path / "outputs"
    args = ("recipe=stub_chain", "tracking=none", "stages.a.seconds=0", "stages.b.seconds=0", "stages.c.seconds=0",
            "stages.d.seconds=0", "stages.report.seconds=0")
    code, msg, first = outcome(compose_stub(outputs, *args))
    assert code == 0, msg
    if not all(a.get("sha256") for a in first["artifacts"]):
        pytest.skip("summary.json records no sha256 per artifact yet (written by pipeline/report.py)")
    run1 = Path(first["run_dir"])
    assert verify_run(run1) == []
    key = {s["name"]: s["cache_key"] for s in first["stages"]}["c"]
    _flip(outputs / "cache" / "entries" / key / "out" / "model.bin")
    code, msg, second = outcome(compose_stub(outputs, *args))
    assert code == 0, msg
    assert {s["name"]: s["status"] for s in second["stages"]}["c"] == "ran"  # the cache noticed and rebuilt it
    assert verify_run(run1) == [] and verify_run(Path(second["run_dir"])) == []
    for a in first["artifacts"]:
        assert os.stat(run1 / a["path"]).st_nlink == 1, f"{a['path']} is hard-linked"
