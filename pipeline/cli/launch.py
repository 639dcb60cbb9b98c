"""Run the Hydra entry point (pipeline/cli/run.py) in this process, as `python -m pipeline` would: the commands that
map onto a recipe (run, plan, benchmark) go through here. Kept apart from pipeline.cli so that those commands import it
without importing the command table."""
from __future__ import annotations

import sys


def run_hydra(args: list[str]) -> int:
    """Run the Hydra entry point (python -m pipeline) with these arguments; returns its exit status."""
    from pipeline.core import interrupts

    interrupts.while_starting()  # importing Hydra and the frameworks takes seconds
    from pipeline.cli.run import main

    sys.argv = ["edge-pipeline", *args]
    try:
        main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
