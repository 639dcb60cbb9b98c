"""`edge-pipeline verify RUN_DIR [RUN_DIR ...]` (or run=RUN_DIR): check run folders against the sha256 values their
summary.json records.

Exit 0 when every artifact matches, 1 when one is missing or modified, 2 when no run folder was given.
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core import arguments as cli_args
from pipeline.core.cache import verify_run

KEYS = {"run": "a run folder (outputs/runs/<recipe>/<stamp>-<device>-<id>); or give the folders as operands"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = cli_args.parse(argv, KEYS, positional="runs")
    except cli_args.HelpRequested:
        print(cli_args.help_text("edge-pipeline verify", __doc__.strip().splitlines()[0], KEYS, "runs"))
        return 0
    except cli_args.UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs = [*args.get("runs", []), *([args["run"]] if "run" in args else [])]
    if not runs:
        print("error: name a run folder: edge-pipeline verify outputs/runs/<recipe>/<run>", file=sys.stderr)
        return 2
    bad = 0
    for arg in runs:
        problems = verify_run(Path(arg))
        if problems:
            bad += 1
            print(f"{arg}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"{arg}: ok")
    if bad:
        print(f"{bad} of {len(runs)} run folder(s) do not match their summary.json: re-run the recipe to rebuild them "
              f"(finished stages are reused from the cache, which checks its own hashes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
