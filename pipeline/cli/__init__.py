"""`edge-pipeline`: one command, one grammar (`edge-pipeline COMMAND key=value ...`), every subcommand with --help.

    edge-pipeline run recipe=mobilenet_int8 device=pixel7        run a recipe (python -m pipeline ... is the same)
    edge-pipeline plan recipe=mobilenet_int8 device=host         what would run and what the cache reuses
    edge-pipeline optimize device=pixel7 budget.accuracy_drop=1  the fastest pruned, distilled int8 model in budget
    edge-pipeline benchmark model=mobilenet_v2                   one model in every format, timed side by side
    edge-pipeline gate --against champion                        this run's model against the registry champion
    edge-pipeline compare experiment=mobilenet_int8              leaderboard of runs: table, Pareto plot, HTML
    edge-pipeline verify run=outputs/runs/...                    check a run folder against its summary.json
    edge-pipeline fit                                            refit the device estimator
    edge-pipeline stages [type=quantize_onnx]                    stage types, or one type's parameters

The Hydra-composed commands (run, plan) take config overrides; the others take their own keys, written the same
way. Imports nothing heavy: each command imports what it needs when it runs.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    summary: str
    run: Callable[[list[str]], int]


def _hydra(extra: list[str], recipe: str | None = None) -> Callable[[list[str]], int]:
    """A command that runs the Hydra entry point with `extra` arguments added (plan: --plan), and `recipe=<recipe>`
    first when the arguments name no recipe (optimize)."""

    def run(args: list[str]) -> int:
        if any(a in ("-h", "--help") for a in args):
            from pipeline.cli.help import text

            print(text())
            return 0
        from pipeline.cli.launch import run_hydra

        first = [f"recipe={recipe}"] if recipe and not any(a.startswith("recipe=") for a in args) else []
        return run_hydra([*first, *args, *extra])

    return run


def _module_main(module: str) -> Callable[[list[str]], int]:
    def run(args: list[str]) -> int:
        import importlib

        return int(importlib.import_module(module).main(args) or 0)

    return run


COMMANDS: dict[str, Command] = {
    "run": Command("run a recipe for a device (Hydra overrides; -m for a sweep)", _hydra([])),
    "plan": Command("print what a run would do and what the cache would reuse; runs nothing", _hydra(["--plan"])),
    "optimize": Command("search pruning, distillation and int8 for the fastest model in the budgets "
                        "(recipe=optimize unless another recipe is named)", _hydra([], recipe="optimize")),
    "benchmark": Command("one model in every format and precision this host runs, timed side by side",
                         _module_main("pipeline.cli.benchmark")),
    "gate": Command("release gate for CI: this run's deployable model against the registry champion",
                    _module_main("pipeline.cli.gate")),
    "compare": Command("leaderboard of runs from MLflow: table, Pareto plot, HTML",
                       _module_main("pipeline.tracking.compare")),
    "verify": Command("check run folders against the sha256 values their summary.json records",
                      _module_main("pipeline.cli.verify")),
    "fit": Command("refit the device latency estimator from the public corpus and the measurement store",
                   _module_main("pipeline.devices.fit")),
    "stages": Command("list the stage types, or print one type's parameters with defaults and docs",
                      _module_main("pipeline.cli.stages")),
}


def usage() -> str:
    w = max(map(len, COMMANDS)) + 2
    lines = [__doc__.strip().splitlines()[0], "", "Usage: edge-pipeline COMMAND [key=value ...]   "
             "(edge-pipeline COMMAND --help for its keys)", "", "Commands:"]
    lines += [f"  {n.ljust(w)}{c.summary}" for n, c in COMMANDS.items()]
    lines += ["", "python -m pipeline [overrides] is `edge-pipeline run`. Exit status: 0 success, 2 invalid input "
                  "(nothing ran), 1 a failure."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import difflib
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `edge-pipeline stages | head` ends quietly
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        if "=" in name:  # overrides without a command: the most common slip
            hint = f" To run a recipe: edge-pipeline run {' '.join(argv)}"
        print(f"error: unknown command {name!r}.{hint} Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    return COMMANDS[name].run(args)


if __name__ == "__main__":
    sys.exit(main())
