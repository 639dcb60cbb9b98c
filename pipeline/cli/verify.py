"""`edge-pipeline verify RUN_DIR|CACHE_DIR|OUTPUTS_DIR ...`: check that recorded results are what was produced.

Each path may be
  a run folder     (outputs/runs/<recipe>/<id>): every artifact against the sha256 its summary.json records,
                   summary.json against its own digest, and the cache entries its stages used (when the cache is
                   still there) as a cache check does;
  a cache folder   (outputs/cache): every entry whole, its files and its metadata (metrics, findings, info,
                   components) against the digests recorded when the stage ran;
  an outputs folder: its cache and every run folder under runs/.

Exit 0 when everything matches, 1 when something is missing or modified, 2 when no path was given or a path is
none of these.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.core import arguments as cli_args
from pipeline.core.cache import Cache, digest
from pipeline.core.runfiles import verify_run

SUMMARY_DIGEST = "summary_sha256"  # summary.json's digest of its other fields (pipeline.report.summary.write_summary)


def summary_problem(summary: dict) -> str | None:
    """None if summary.json's fields still match the digest it was written with."""
    want = summary.get(SUMMARY_DIGEST)
    if want is None:
        return None  # written before summaries carried a digest: nothing to compare
    body = {k: v for k, v in summary.items() if k != SUMMARY_DIGEST}
    try:
        same = digest(body) == want
    except (RecursionError, ValueError, TypeError):
        same = False
    if not same:
        return "summary.json was edited after the run wrote it (its fields no longer match summary_sha256)"
    return None


def check_cache(root: Path) -> list[str]:
    """Every entry of the cache at `root` that may not be trusted, with the reason."""
    cache = Cache(root)
    entries = root / "entries"
    out = []
    for d in sorted(entries.iterdir()) if entries.is_dir() else []:
        _, problem = cache.inspect(d.name)
        if problem:
            out.append(f"cache entry {d.name[:16]}...: {problem}")
    return out


def check_run(run_dir: Path) -> list[str]:
    """A run folder against its summary.json, and the cache entries of its stages if the cache is still there."""
    run_dir = Path(run_dir).resolve()  # (outputs/latest is a link to the newest run folder)
    problems = verify_run(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError, RecursionError):
        return problems  # (verify_run said why)
    if not isinstance(summary, dict):
        return problems
    p = summary_problem(summary)
    if p:
        problems.append(p)
    cache = Cache(run_dir.parent.parent.parent / "cache")  # outputs/runs/<recipe>/<id> -> outputs/cache
    for s in summary.get("stages") or []:
        key = s.get("cache_key") if isinstance(s, dict) else None
        if s.get("status") not in ("ran", "reused") or not isinstance(key, str) or not key.isalnum():
            continue
        _, problem = cache.inspect(key)
        if problem:  # (an entry removed since is no problem: the run folder is self-contained)
            problems.append(f"stage {s.get('name')!r}: its cache entry {key[:16]}... {problem}")
    return problems


def check(path: Path) -> list[str] | None:
    """Problems found under `path`, or None when it is neither a run, a cache nor an outputs folder."""
    if any((path / f).exists() for f in ("summary.json", "pipeline.log", "config.yaml")):
        return check_run(path)
    if (path / "entries").is_dir():
        return check_cache(path)
    if (path / "cache").is_dir() or (path / "runs").is_dir():
        out = check_cache(path / "cache")
        for summary in sorted((path / "runs").glob("*/*/summary.json")):
            out += [f"{summary.parent.relative_to(path)}: {p}" for p in check_run(summary.parent)]
        return out
    return None


KEYS = {"run": "a run folder (outputs/runs/<recipe>/<id>), a cache folder or an outputs folder; or give them as "
                "operands"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = cli_args.parse(argv, KEYS, positional="paths")
    except cli_args.HelpRequested:
        print(__doc__.strip() + "\n\n" + cli_args.help_text("edge-pipeline verify", "", KEYS, "paths").strip())
        return 0
    except cli_args.UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = [*args.get("paths", []), *([args["run"]] if "run" in args else [])]
    if not paths:
        print("error: name a run folder, a cache folder or an outputs folder: edge-pipeline verify outputs/runs/"
              "<recipe>/<run>", file=sys.stderr)
        return 2
    bad = unknown = 0
    for arg in paths:
        problems = check(Path(arg))
        if problems is None:
            unknown += 1
            print(f"{arg}: not a run folder (no summary.json), a cache folder (no entries/) or an outputs folder")
        elif problems:
            bad += 1
            print(f"{arg}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"{arg}: ok")
    if bad:
        print(f"{bad} of {len(paths)} path(s) do not match what was recorded: re-run the recipe to rebuild them (the "
              f"cache treats an altered entry as missing and recomputes it; finished intact stages are reused)")
    return 2 if unknown else 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
