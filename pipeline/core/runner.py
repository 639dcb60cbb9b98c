"""Executes a plan: derive each task's key -> reuse or run -> store atomically -> record. Knows no ML framework."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import cache as cache_mod
from pipeline.core import console, runfiles
from pipeline import data as data_mod
from pipeline.core import results
from pipeline.core import codekey
from pipeline.core.artifacts import Artifact
from pipeline.core.errors import ConfigError, NotRunnableHere, StageError
from pipeline.core.plan import Plan, Task
from pipeline.core.results import Findings
from pipeline.stages import StageContext, StageResult
from pipeline.stages.base import FAILURE_DIR

log = logging.getLogger("pipeline")
HEARTBEAT_S = 30.0  # a stage that shows nothing for this long gets a "still running" line on the console


@dataclass
class TaskRecord:
    """What happened to one task; becomes a `stages` entry of summary.json and a nested MLflow run."""

    name: str
    stage: str
    type: str
    inputs: list[str]
    status: str = "pending"  # ran | reused | failed | interrupted
    seconds: float = 0.0
    cache_key: str = ""
    reason: str = ""
    artifact: Artifact | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    about: dict[str, Findings] = field(default_factory=dict)  # artifact name -> what this task found about it
    params: dict[str, Any] = field(default_factory=dict)
    error: str = ""


DATA_LOADERS = "pipeline.data"  # the package that loads the data set for a task that reads it (ctx.data())


def components(task: Task, input_keys: dict[str, str], data_fingerprint, formats: frozenset[str] = frozenset(),
               data_name: str | None = None) -> dict:
    """Everything that decides a task's result; its digest is the cache key. `data_fingerprint` is called only when
    the stage reads the data set. `formats`: the model formats the task and its upstream stages handle, which
    decide the runtimes it reaches (pipeline.core.codekey); `data_name`: the data set's loader it reaches."""
    cls = task.cls
    reads_data = task.settings.reads_data
    reach = frozenset(codekey.strings_in(task.settings.values) | codekey.strings_in(task.params_dict) | formats
                      | ({data_name} if reads_data and data_name else set()))
    extra = (DATA_LOADERS,) if reads_data else ()
    comp: dict[str, Any] = {
        "type": cls.type,
        "params": task.params_dict,
        "settings": task.settings.values,
        "inputs": dict(input_keys),
        "code": codekey.code_digests(cls, reach, extra),
        "libraries": codekey.library_versions(cls, reach, extra),
    }
    if reads_data:
        comp["data"] = data_fingerprint()
    extra = cls.key_extra(task.params, task.settings)  # e.g. an imported file's content hash
    if extra:
        comp["extra"] = extra
    return comp


class Runner:
    def __init__(self, plan: Plan, cfg: Any, cache: cache_mod.Cache, run_dir: Path, events=None, use_cache: bool = True):
        """`events`: a pipeline.core.events.Events that hears of every finished task (None: nobody listens)."""
        self.plan, self.cfg, self.cache, self.run_dir, self.events = plan, cfg, cache, run_dir, events
        self.use_cache = use_cache
        forced = set(cfg.cache.force)
        self.forced = forced | plan.descendants(forced)
        self.records: dict[str, TaskRecord] = {}
        self._data = None
        self._data_fp: str | None = None

    # --- inputs of a task -------------------------------------------------------------------------------------
    def _load_data(self):
        if self._data is None:
            log.info("loading data: %s (input %s)", self.cfg.data.name, data_mod.size.shown(self.cfg.model.input_size))
            self._data = data_mod.load(self.cfg.data, data_mod.size.key(self.cfg.model.input_size))
        return self._data

    def data_fingerprint(self) -> str:
        if self._data_fp is None:
            self._data_fp = data_mod.fingerprint(self.cfg.data, data_mod.size.key(self.cfg.model.input_size))
        return self._data_fp

    def components(self, task: Task) -> dict:
        return components(task, {i: self.records[i].cache_key for i in task.inputs}, self.data_fingerprint,
                          self.plan.formats_reaching(task), str(self.cfg.data.name))

    def lineage(self, stage: str) -> list[Artifact]:
        """Artifacts from `stage` up its first-input chain, nearest first (parity uses it to find the culprit)."""
        out, cur = [], stage
        while cur in self.records:
            rec = self.records[cur]
            if rec.artifact:
                out.append(rec.artifact)
            cur = rec.inputs[0] if rec.inputs else None
        return out

    # --- execution --------------------------------------------------------------------------------------------
    def run(self) -> list[TaskRecord]:
        for task in self.plan.tasks:
            self._run_task(task)
        return list(self.records.values())

    def preview(self) -> list[dict]:
        """What `run` would do, without running or writing anything: per task its key and whether the cache holds a
        valid entry for it (reuse) or why it would run. Keys are derived from content, so they are known up front."""
        rows = []
        for task in self.plan.tasks:
            rec = TaskRecord(task.name, task.stage, task.cls.type, list(task.inputs), params=task.params_dict)
            self.records[task.name] = rec
            comp = self.components(task)
            rec.cache_key = key = cache_mod.digest(comp)
            forced = task.stage in self.forced
            entry, problem = self.cache.inspect(key) if self.use_cache and not forced else (None, None)
            if entry is not None:
                will, why = "reuse", f"cached entry {key[:12]} is intact"
            elif not self.use_cache:
                will, why = "run", "cache disabled (cache.enabled=false)"
            elif forced:
                will, why = "run", "forced (cache.force)"
            elif problem:
                will, why = "run", _untrusted(key, problem)
            else:
                will, why = "run", self.cache.explain_miss(self.plan.recipe, task.name, comp)
            rows.append({"task": task.name, "type": task.cls.type, "inputs": list(task.inputs),
                         "format": task.output_format, "will": will, "reason": why, "key": key,
                         "last_seconds": (self.cache.last_seconds(self.plan.recipe, task.name, task.cls.type)
                                          if will == "run" else None)})
        return rows

    def _artifact_from(self, entry: cache_mod.Entry, key: str, stage: str) -> Artifact | None:
        a = entry.manifest.get("artifact")
        if not a:
            return None
        # The stage name is this recipe's, not the manifest's: another recipe may have made the same entry under
        # another name (export_base of one recipe can be the `export` entry of another).
        return Artifact(stage=stage, format=a["format"], precision=a["precision"], path=entry.out / a["path"],
                        meta=a.get("meta", {}), key=key)

    def _run_task(self, task: Task) -> None:
        rec = TaskRecord(task.name, task.stage, task.cls.type, list(task.inputs), params=task.params_dict)
        self.records[task.name] = rec
        comp = self.components(task)
        rec.cache_key = key = cache_mod.digest(comp)
        start = time.perf_counter()
        with self.cache.lock(key):
            if self.use_cache and task.stage in self.forced:
                self.cache.invalidate(key)  # under the key's lock: no other process is reading or committing it
            entry, problem = (self.cache.inspect(key) if self.use_cache and task.stage not in self.forced
                              else (None, None))
            if entry is not None:
                rec.status = "reused"
                made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.manifest["created"]))
                rec.reason = f"same key {key[:12]} (inputs, parameters, data, code and library versions unchanged; made {made})"
            else:
                if not self.use_cache:
                    rec.reason = "cache disabled (cache.enabled=false)"
                elif task.stage in self.forced:
                    rec.reason = ("forced (cache.force)" if task.stage in self.cfg.cache.force
                                  else "forced: an upstream stage was forced (cache.force)")
                elif problem:  # an entry exists but was altered: rebuilt, and the user told what changed
                    rec.reason = _untrusted(key, problem)
                    log.warning("%s: %s", task.name, rec.reason)
                else:
                    rec.reason = self.cache.explain_miss(self.plan.recipe, task.name, comp)
                log.info("▶ %s (%s): running — %s", task.name, task.cls.type, rec.reason)
                entry = self._execute(task, rec, comp)
        rec.seconds = time.perf_counter() - start
        if rec.status == "reused":
            log.info("✔ %s (%s): reused — %s", task.name, task.cls.type, rec.reason)
        else:
            log.info("✔ %s (%s): done in %s", task.name, task.cls.type, console.duration(rec.seconds))
        rec.artifact = self._artifact_from(entry, key, task.stage)
        rec.metrics = dict(entry.manifest.get("metrics", {}))
        rec.info = dict(entry.manifest.get("info", {}))
        rec.about = results.load(entry.manifest.get("about", {}))
        rec.files = [entry.out / f for f in entry.manifest.get("extra_files", [])]
        if self.use_cache:
            self.cache.remember(self.plan.recipe, task.name, comp)
        self._publish(rec, entry)
        if self.events:
            self.events.task_finished(rec, entry.out)

    def _execute(self, task: Task, rec: TaskRecord, comp: dict) -> cache_mod.Entry:
        work = self.cache.workdir(rec.cache_key)
        ctx = StageContext(
            name=task.name, params=task.params, settings=task.settings,
            inputs={i: self.records[i].artifact for i in task.inputs},
            workdir=work / "out", lineage=self.lineage, log=logging.getLogger(f"pipeline.stage.{task.stage}"),
            _data_loader=self._load_data,
        )
        t0 = time.perf_counter()
        try:
            try:
                # library chatter of the stage into pipeline.log (verbose=true: shown); a line if it goes silent
                with console.quiet(), console.heartbeat(f"{task.name} ({task.cls.type})", HEARTBEAT_S):
                    result = task.cls().run(ctx)
            except NotRunnableHere as e:  # e.g. Core ML on Linux: a reported fact, not a failure
                result = StageResult(info={"not_runnable": str(e)},
                                     about={a.stage: Findings(not_runnable=str(e)) for a in ctx.inputs.values()})
            # storing the result can fail too (a full disk, a stage naming a file outside its folder): same path
            entry = self.cache.commit(rec.cache_key, work, self._manifest(task, work, comp, result, t0))
        except (KeyboardInterrupt, SystemExit):
            self.cache.discard(work)
            rec.status, rec.seconds = "interrupted", time.perf_counter() - t0
            raise
        except Exception as e:
            raise self._failed(task, rec, work, e, t0) from e
        rec.status = "ran"
        return entry

    @staticmethod
    def _manifest(task: Task, work: Path, comp: dict, result: StageResult, t0: float) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "components": comp,
            "seconds": time.perf_counter() - t0,
            "metrics": {k: float(v) for k, v in result.metrics.items()},
            "info": result.info,
            "about": results.dump(result.about),
            "extra_files": [_inside_workdir(work / "out", f, "an extra file") for f in result.files],
        }
        if result.artifact is not None:
            a = result.artifact
            rel = _inside_workdir(work / "out", a.path, "its artifact")
            manifest["artifact"] = {"stage": task.stage, "format": a.format, "precision": a.precision,
                                    "path": rel, "meta": a.meta}
        return manifest

    def _failed(self, task: Task, rec: TaskRecord, work: Path, e: Exception, t0: float) -> StageError:
        """Discard the stage's partial output, record the failure (traceback kept in the run folder) and say why.
        Files the stage wrote under `ctx.workdir / FAILURE_DIR` (a diagnosis of why it failed) are kept in the run
        folder's reports/<task>/ first."""
        kept = []
        diag = work / "out" / FAILURE_DIR
        if diag.is_dir():
            with contextlib.suppress(OSError):
                dest = self.run_dir / "reports" / task.name
                dest.mkdir(parents=True, exist_ok=True)
                for f in sorted(diag.iterdir()):
                    if f.is_file() and not f.is_symlink():
                        shutil.copyfile(f, dest / f.name)
                        kept.append(dest / f.name)
        rec.files = kept
        rec.about = dict(getattr(e, "about", None) or {})  # a failed check's findings (CheckFailed): shown, never cached
        self.cache.discard(work)
        rec.status, rec.seconds = "failed", time.perf_counter() - t0
        rec.error = f"{type(e).__name__}: {e}"
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            rec.error += (f" -- the disk holding {self.cache.root} is full: free space there or move paths.outputs "
                          f"to a bigger disk (paths.outputs=DIR), then re-run")
        rec.reason = rec.reason or "ran"
        log.debug("stage %s failed:\n%s", task.name, traceback.format_exc())
        where = self.run_dir / "logs" / f"{task.name}.traceback.txt"
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            where.write_text(traceback.format_exc())
        except OSError:  # a full disk must not hide the stage's own error
            where = self.run_dir / "pipeline.log"
        log.info("✘ %s (%s): failed after %s (traceback: %s)", task.name, task.cls.type,
                 console.duration(rec.seconds), where)
        if self.events:
            self.events.task_finished(rec, None)
        err = StageError(f"stage '{task.name}' ({task.cls.type}) failed: {rec.error}")
        err.record = rec
        return err

    def _publish(self, rec: TaskRecord, entry: cache_mod.Entry) -> None:
        """Reflink (or copy, never hard-link) a producer's files into <run_dir>/artifacts/<stage>/: each run is
        self-contained, and nothing done to a run folder can alter the cache entry, or the reverse."""
        if rec.artifact is None:
            # an analysis stage's extra files (device profile JSON/PNG) go to <run_dir>/reports/<task>/
            for f in rec.files:
                dest = self.run_dir / "reports" / rec.name / f.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                runfiles.publish(f, dest)
            return
        dest_root = self.run_dir / "artifacts" / rec.stage
        for src in entry.out.rglob("*"):
            if src.is_file():
                dest = dest_root / src.relative_to(entry.out)
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    runfiles.publish(src, dest)
                except OSError as e:  # no half-copied model in the run folder; the cache entry itself is complete
                    shutil.rmtree(dest_root, ignore_errors=True)
                    err = StageError(f"stage '{rec.name}': could not copy its result into {dest_root} ({e.strerror}); "
                                     f"free space under {self.run_dir.parent} or choose paths.outputs=DIR, then re-run "
                                     f"(the stage is cached and will be reused)")
                    err.record = rec
                    raise err from e
        rel = str(rec.artifact.path.relative_to(entry.out))
        rec.info.setdefault("run_path", str((dest_root / rel).relative_to(self.run_dir)))
        # the recorded hash of the file (a package directory: of its files, in path order), for checking run folders
        files = entry.manifest.get("files", {})
        if rel in files:
            rec.info["sha256"] = files[rel]["sha256"]
        else:
            inside = sorted(f for f in files if f.startswith(rel + "/"))
            rec.info["sha256"] = cache_mod.digest({f[len(rel) + 1:]: files[f]["sha256"] for f in inside}) if inside else None


def _untrusted(key: str, problem: str) -> str:
    return (f"cache entry {key[:12]} failed its integrity check ({problem}); not trusted: rebuilding it "
            f"(edge-pipeline verify CACHE_DIR lists every such entry)")


def _inside_workdir(out: Path, path: Any, what: str) -> str:
    """`path` relative to the stage's work folder; a stage may not hand back a file outside it (path traversal)."""
    p = Path(path)
    p = p if p.is_absolute() else out / p
    try:
        rel = p.resolve().relative_to(out.resolve())
    except ValueError:
        raise ValueError(f"the stage returned {what} {str(path)!r} outside its work folder {out}; stages must write "
                         f"only inside ctx.workdir") from None
    if not p.exists():
        raise ValueError(f"the stage returned {what} {str(path)!r} that it did not write")
    return str(rel)


def check_outputs_writable(root: Path, min_free_mb: int = 0) -> None:
    """Fail before any work if the outputs folder cannot be written, or if its disk has less than `min_free_mb` MB
    free (paths.min_free_mb): a run that fills the disk halfway fails later and slower."""
    probe = root / f".write-probe.{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        try:
            probe.write_text("ok")
        finally:  # (on a full disk the file is created, then the write fails)
            probe.unlink(missing_ok=True)
    except OSError as e:
        raise ConfigError(f"paths.outputs: cannot write to {str(root)!r} ({e.strerror}); choose a writable folder "
                          f"with paths.outputs=DIR") from e
    if min_free_mb:
        free_mb = shutil.disk_usage(root).free / 1e6
        if free_mb < min_free_mb:
            raise ConfigError(
                f"paths.outputs: the disk holding {str(root)!r} ({_disk_of(root)}) has {free_mb:.0f} MB free, less than "
                f"the {min_free_mb} MB a run needs (paths.min_free_mb). Free space there, choose a folder on another "
                f"disk with paths.outputs=DIR, or lower paths.min_free_mb (0 turns the check off)")


def _disk_of(path: Path) -> str:
    """'mounted at /mnt/data from /dev/sdb1' for the file system holding `path` (as far as /proc/self/mounts says)."""
    mount = path.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    source = None
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1].replace("\\040", " ") == str(mount):
                source = f"{fields[0]} ({fields[2]})"  # the last entry wins: a later mount hides an earlier one
    except OSError:
        pass
    return f"mounted at {mount}" + (f" from {source}" if source else "")
