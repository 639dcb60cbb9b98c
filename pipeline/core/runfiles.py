"""The files of a run folder: each published read-only from the cache (a reflink where the filesystem can clone, else
a copy; never a hard link), and checked later against the sha256 values summary.json records (`edge-pipeline
verify`). Imports no ML framework."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import uuid
from pathlib import Path

from pipeline.core.cache import _contained, _files_under, _read_only, digest, file_sha256

FICLONE = 0x40049409  # Linux ioctl: make dest a copy-on-write clone of src (btrfs, XFS, bcachefs, OCFS2 ...)


def publish(src: Path, dest: Path) -> str:
    """Put a read-only copy of cache file `src` at `dest` (a run folder): a reflink where the filesystem can clone,
    else a byte copy; never a hard link, which would share the bytes both ways. Written under a temporary name and
    renamed, so a killed run never leaves half a model under the final name. Returns "reflink" or "copy".

    Done by hand: shutil.copy2 never clones (it uses sendfile on Linux), and GNU `cp --reflink=auto` would be a
    process per file; the FICLONE ioctl is the same call cp makes."""
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    how = "copy"
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            try:
                fcntl.ioctl(fo.fileno(), FICLONE, fi.fileno())
                how = "reflink"
            except OSError:  # EOPNOTSUPP / EXDEV / EINVAL: this filesystem (or pair) cannot clone
                shutil.copyfileobj(fi, fo, 1 << 20)
        shutil.copystat(src, tmp)
        _read_only(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return how


def path_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder (a Core ML .mlpackage) as the digest of its files' relative paths and hashes.
    Anything else (a FIFO, a device, a link to one) raises OSError rather than being read."""
    path = Path(path)
    if path.is_dir():
        return digest({rel: path_sha256(path / rel) for rel in _files_under(path)})
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"not a regular file: {path}")
    return file_sha256(path)


def verify_run(run_dir: Path) -> list[str]:
    """Every artifact of a run folder against the sha256 its summary.json records, as a list of problems (empty: the
    run folder holds exactly what the run produced). Each artifact of summary["artifacts"] has "path" (relative to the
    run folder; a file or a folder) and "sha256" (`path_sha256` of it)."""
    run_dir = Path(run_dir)
    where = run_dir / "summary.json"
    try:
        summary = json.loads(where.read_text())
    except FileNotFoundError:
        return [f"{where}: missing: the run did not finish (or this is not a run folder)"]
    except (OSError, ValueError, RecursionError) as e:
        return [f"{where}: unreadable ({type(e).__name__}: {str(e)[:200]})"]
    problems = []
    artifacts = summary.get("artifacts") if isinstance(summary, dict) else None
    if not isinstance(artifacts, list):
        return [f"{where}: no 'artifacts' list"]
    for i, a in enumerate(artifacts):
        name = a.get("name", f"artifacts[{i}]") if isinstance(a, dict) else f"artifacts[{i}]"
        rel, want = (a.get("path"), a.get("sha256")) if isinstance(a, dict) else (None, None)
        if not isinstance(rel, str) or not _contained(run_dir, rel):
            problems.append(f"{name}: path {rel!r} is not a relative path inside the run folder")
            continue
        if not want:
            problems.append(f"{name}: summary.json records no sha256 for {rel} (written by an older version?)")
            continue
        p = run_dir / rel
        if not p.exists():
            problems.append(f"{name}: {rel} is missing")
            continue
        try:
            got = path_sha256(p)
        except OSError as e:
            problems.append(f"{name}: {rel} unreadable ({e.strerror or e})")
            continue
        if got != want:
            problems.append(f"{name}: {rel} was modified: sha256 {got[:16]}..., summary.json records {want[:16]}...")
    return problems
