"""Content-addressed stage cache.

A key is the SHA-256 of the stage's components: type, resolved parameters, its inputs' keys, the data fingerprint,
the model and device settings it uses, its source code and the versions of the libraries it uses. So any upstream change
invalidates everything below it, and a new library version never serves a stale result.

Layout under <root>:
  entries/<key>/entry.json   manifest (components, files with sizes and SHA-256, metrics, findings, info) and a
                             SHA-256 of each of its fields (`integrity`); written last
  entries/<key>/out/...      the stage's files
  tmp/                       work directories of running stages; renamed into entries/ only on success
  locks/<key>.lock           flock held while a key is computed, so concurrent runs compute it once
  index/<recipe>/<stage>.json the components of the last run of that stage, to explain why it re-ran
Entries are made visible by one atomic rename of a finished directory: a killed run leaves at most a stray tmp/ dir.
Every read checks an entry whole (`inspect`): its files against their hashes and its metadata against the digests
recorded at commit and against its key; an entry that fails is a miss, rebuilt, and the reason names what changed.

Results are immutable: an entry's files are made read-only when it is committed, and `publish` puts them into run folders
as reflinks (copy-on-write clones, where the filesystem has them) or copies, never hard links, so that nothing written
through a run folder reaches a cache entry or the reverse. `verify_run` checks a run folder against the sha256 values
its summary.json records (`edge-pipeline verify RUN_DIR`).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEMA = 4  # bump when the entry layout or the key's components change (4: metadata digests, a digest per code file)
INTEGRITY = "integrity"  # entry.json's record of a SHA-256 per top-level field, written at commit


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class Entry:
    key: str
    dir: Path
    manifest: dict

    @property
    def out(self) -> Path:
        return self.dir / "out"


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        return self.root / "entries" / key

    def lookup(self, key: str) -> Entry | None:
        """The entry for `key` if it exists and passes `inspect`, else None (treated as missing: recomputed)."""
        return self.inspect(key)[0]

    def inspect(self, key: str) -> tuple[Entry | None, str | None]:
        """(entry, None) for an intact entry; (None, None) when there is none; (None, why) when one exists but may
        not be trusted: its metadata (metrics, findings, info, components ...) no longer matches the digests recorded
        at commit, a file changed, was added or is missing, or a path it names leaves the entry."""
        d = self.entry_dir(key)
        try:
            text = (d / "entry.json").read_text()
        except FileNotFoundError:  # (commit renames a finished folder: one without entry.json was made by hand)
            return None, ("the entry folder has no entry.json (an incomplete or hand-made entry)" if d.exists()
                          else None)
        except OSError as e:
            return None, f"entry.json unreadable ({e.strerror})"
        try:
            manifest = json.loads(text)
            problem = entry_problem(key, d, manifest)
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            problem = f"entry.json is malformed ({type(e).__name__}: {str(e)[:200]})"
        if problem:
            return None, problem
        return Entry(key, d, manifest), None

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold an exclusive lock on `key`: a second process computing the same key waits, then finds the entry.

        Re-entrant within a thread (flock would otherwise block on a second open of the same lock file), so that
        `invalidate` can be called with or without the lock already held."""
        path = str((self.root / "locks" / f"{key}.lock").absolute())
        held = _held()
        if held.get(path):
            held[path] += 1
            try:
                yield
            finally:
                held[path] -= 1
            return
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            held[path] = 1
            try:
                yield
            finally:
                held.pop(path, None)
                fcntl.flock(f, fcntl.LOCK_UN)

    def invalidate(self, key: str) -> bool:
        """Move the entry of `key` out of entries/ under its lock (cache.force), so that no other process is computing
        or committing it meanwhile, then delete it. Returns whether there was one."""
        with self.lock(key):
            final = self.entry_dir(key)
            if not final.exists():
                return False
            self._move_away(key, final)
            return True

    def _move_away(self, key: str, final: Path) -> None:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        trash = self.root / "tmp" / f"stale.{key[:16]}.{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def workdir(self, key: str) -> Path:
        """A fresh private directory for a stage to write into (named after this host and process, so that the
        leftovers of a killed run can be recognised and removed at once)."""
        d = self.root / "tmp" / f"{key[:16]}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        (d / "out").mkdir(parents=True)
        return d

    def commit(self, key: str, work: Path, manifest: dict) -> Entry:
        """Record sizes and hashes, fsync, and move the finished directory into place in one rename."""
        files = {}
        for rel in _files_under(work / "out"):
            p = work / "out" / rel
            if p.is_symlink():  # could point anywhere, and the run folder and MLflow would copy what it points to
                raise ValueError(f"the stage wrote a symbolic link {rel!r} (to {os.readlink(p)}); stages must write "
                                 f"regular files inside ctx.workdir")
            files[rel] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            _read_only(p)
        manifest = {**manifest, "key": key, "schema": SCHEMA, "files": files, "created": time.time()}
        manifest = json.loads(json.dumps(manifest, default=str))  # what a later read sees, so that its digests match
        manifest[INTEGRITY] = sections_digest(manifest)
        write_json_atomic(work / "entry.json", manifest)
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        with self.lock(key):  # (the runner holds it already; re-entrant)
            if final.exists():  # a stale or corrupt entry (lookup refused it), or a forced re-run: replace it
                self._move_away(key, final)
            os.rename(work, final)
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return Entry(key, final, manifest)

    def discard(self, work: Path) -> None:
        shutil.rmtree(work, ignore_errors=True)

    def clean_tmp(self, older_than_s: float = 3600) -> None:
        """Remove work directories left by killed runs: at once when they name a process of this host that is gone,
        otherwise once they are old enough that no live run can own them (e.g. a cache shared by several hosts)."""
        tmp = self.root / "tmp"
        if not tmp.is_dir():
            return
        now = time.time()
        for d in tmp.iterdir():
            with contextlib.suppress(OSError):
                if _owner_gone(d.name) or now - d.stat().st_mtime > older_than_s:
                    shutil.rmtree(d, ignore_errors=True)

    # --- why a stage ran -------------------------------------------------------------------------------------
    def _index_path(self, recipe: str, stage: str) -> Path:
        return self.root / "index" / recipe / f"{stage}.json"

    def remember(self, recipe: str, stage: str, components: dict) -> None:
        write_json_atomic(self._index_path(recipe, stage), components)

    def explain_miss(self, recipe: str, stage: str, components: dict) -> str:
        """Why `stage` has no usable entry, by comparing with the components of its last run in this recipe."""
        try:
            last = json.loads(self._index_path(recipe, stage).read_text())
            if not isinstance(last, dict):
                raise ValueError("not a record")
        except (OSError, ValueError, RecursionError):
            return "no cached result for these settings (first run of this stage)"
        changes = diff(last, components)
        if not changes:
            return "cache entry missing or failed its integrity check"
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        return f"changed since last run: {shown}"

    def last_seconds(self, recipe: str, stage: str, stage_type: str) -> float | None:
        """How long the last run of `stage` in `recipe` took, from its cache entry (None: never ran here as a
        `stage_type`, or its entry is gone)."""
        try:
            last = json.loads(self._index_path(recipe, stage).read_text())
            if last.get("type") != stage_type:  # another stage type under the same name tells nothing
                return None
            seconds = json.loads((self.entry_dir(digest(last)) / "entry.json").read_text()).get("seconds")
        except (OSError, ValueError):
            return None
        return float(seconds) if isinstance(seconds, (int, float)) else None


def sections_digest(manifest: dict) -> dict[str, str]:
    """SHA-256 of every top-level field of a manifest (but the integrity record itself), so that a check can name
    which field changed."""
    return {k: digest(v) for k, v in manifest.items() if k != INTEGRITY}


def entry_problem(key: str, d: Path, manifest: Any) -> str | None:
    """Why the entry at `d` may not be used for `key` (None: it is intact). Its metadata is checked against the
    digests recorded at commit and against the key itself (the key is the digest of its components); its files
    against their sizes and hashes. An edit that also rewrites the digests is a forgery these checks do not catch:
    the cache trusts whoever can write its folder (see docs/reliability.md)."""
    if not isinstance(manifest, dict):
        return "entry.json is not a JSON object"
    if manifest.get("key") != key:
        return f"entry.json names another key ({str(manifest.get('key'))[:16]}...)"
    if manifest.get("schema") != SCHEMA:
        return f"written by another version of the pipeline (entry schema {manifest.get('schema')!r}, now {SCHEMA})"
    recorded = manifest.get(INTEGRITY)
    if not isinstance(recorded, dict):
        return "entry.json has no integrity record (its metadata cannot be checked)"
    now = sections_digest(manifest)
    changed = sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
    if changed:
        what = ", ".join(f"{k!r}" + (" (added)" if k not in recorded else " (removed)" if k not in now else "")
                         for k in changed)
        return f"metadata {what} of entry.json changed after the stage ran (it no longer matches its digest)"
    if "components" in manifest and digest(manifest["components"]) != key:
        return "its components no longer hash to its key (entry.json was edited)"
    files = manifest.get("files", {})
    named = [*files, *manifest.get("extra_files", [])]
    if manifest.get("artifact"):
        named.append(manifest["artifact"]["path"])
    outside = [rel for rel in named if not (isinstance(rel, str) and _contained(d / "out", rel))]
    if outside:
        return f"entry.json names a path outside the entry: {str(outside[0])!r}"
    present = set(_files_under(d / "out"))
    if set(files) != present:
        added, missing = sorted(present - set(files)), sorted(set(files) - present)
        return "; ".join([*(f"file {r!r} was added" for r in added[:3]), *(f"file {r!r} is missing" for r in missing[:3])])
    for rel, rec in files.items():
        p = d / "out" / rel
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode):  # (a link, a FIFO or a device: never followed, never read)
            return f"file {rel!r} was replaced by something that is not a regular file"
        if st.st_size != rec["size"] or file_sha256(p) != rec["sha256"]:
            return f"file {rel!r} was modified (size or sha256 differs from the record)"
    return None


_LOCAL = threading.local()


def _held() -> dict[str, int]:
    """Lock files this thread holds (see Cache.lock)."""
    if not hasattr(_LOCAL, "held"):
        _LOCAL.held = {}
    return _LOCAL.held


def _read_only(p: Path) -> None:
    os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


_HOST = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40] or "host"


def _owner_gone(name: str) -> bool:
    """True if a tmp/ entry named <key>.<host>.<pid>.<rand> belongs to a process of this host that no longer exists."""
    parts = name.split(".")
    if len(parts) != 4 or parts[1] != _HOST or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _contained(base: Path, rel: str) -> bool:
    """`rel` is a relative path that stays inside `base` (no absolute path, no '..' escaping it)."""
    if not rel or os.path.isabs(rel) or "\x00" in rel:
        return False
    base_n = os.path.normpath(str(base))
    full = os.path.normpath(os.path.join(base_n, rel))
    return full == base_n or full.startswith(base_n + os.sep)


def _files_under(root: Path) -> list[str]:
    """Relative paths of the files (and symbolic links) under `root`, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames:  # a symlinked folder is listed, never followed
            if os.path.islink(os.path.join(dirpath, n)):
                filenames.append(n)
        for n in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def diff(old: dict, new: dict) -> list[str]:
    """Readable differences between two component records, the cause first and its consequences folded into it:
    'stage type quantize_onnx -> select_int8' (its parameters and code follow from it), 'device jetson_orin_nano ->
    host' (every device setting with it), 'code changed: models/mobilenet_v2.py' (the key holds a digest per file, so
    the file is named; libraries that new code brings in are not listed again), 'params.calibration_samples 128 ->
    64', "input 'export' changed"."""
    a, b = _flatten(old), _flatten(new)
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if "type" in changed:
        return [f"stage type {a.get('type')} -> {b.get('type')}"]
    out, code, inputs = [], [], []
    device_renamed = "settings.device.name" in changed
    new_code = any(k == "code" or k.startswith("code.") for k in changed)
    if device_renamed:
        out.append(f"device {a.get('settings.device.name')} -> {b.get('settings.device.name')}")
    for k in changed:
        if k.startswith("inputs."):
            inputs.append(k[7:])
        elif k == "code" or k.startswith("code."):
            code.append(k[5:] + ("" if k in a else " (new)") if k != "code" else "the stage's code")
        elif k == "data":
            out.append("data changed")
        elif k.startswith("settings.device.") and device_renamed:
            continue
        elif k.startswith("settings."):
            out.append(f"setting {k[9:]} {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}")
        elif k.startswith("libraries."):
            if not (new_code and k not in a):  # a library new code brings in is part of that code change
                out.append(f"library {k[10:]} {a.get(k, '(not used)')} -> {b.get(k, '(not used)')}")
        else:
            out.append(f"{k} {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}")
    first = out[:1] if device_renamed else []  # the cause before what follows from it (inputs, code)
    if inputs:
        first.append(f"input {', '.join(map(repr, inputs))} changed" if len(inputs) == 1
                     else f"inputs {', '.join(map(repr, inputs))} changed")
    if code:
        shown = ", ".join(code[:3]) + (f" and {len(code) - 3} more" if len(code) > 3 else "")
        first.append(f"code changed: {shown}")
    return first + out[1 if device_renamed else 0:]