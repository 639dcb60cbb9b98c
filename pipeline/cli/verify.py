"""`python -m pipeline.cli.verify RUN_DIR [RUN_DIR ...]`: check run folders against the sha256 values in their summary.json.

Exit 0 when every artifact matches, 1 when one is missing or modified, 2 when no run folder was given.
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core.cache import verify_run


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return 0 if args else 2
    bad = 0
    for arg in args:
        problems = verify_run(Path(arg))
        if problems:
            bad += 1
            print(f"{arg}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"{arg}: ok")
    if bad:
        print(f"{bad} of {len(args)} run folder(s) do not match their summary.json: re-run the recipe to rebuild them "
              f"(finished stages are reused from the cache, which checks its own hashes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
