"""`edge-pipeline gate --against champion [run=DIR]`: the release gate for CI. This run's deployable model against a
version of the registered model of the same recipe and device (the `champion` alias by default): accuracy with its
sampling interval, latency timed again side by side, size, device estimate. Prints the Markdown report (fit for a
pull-request comment) and writes it to <run>/release_gate.md.

Exit status: 0 no regression beyond the noise (or nothing to compare with yet), 1 a regression, 2 bad input (not a
finished run folder, an untracked run, no such version).
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core import arguments as cli_args
from pipeline.core.errors import ConfigError
from pipeline.report.schema import Release, Summary

KEYS = {"against": "champion (default) | candidate | a version number of the registered model",
        "run": "the run folder to judge (default: outputs/latest, the newest run)",
        "tolerance_pct": "a slowdown or growth below this is no regression even when measurable (default: the "
                         "run's gate.tolerance_pct)",
        "iterations": "timed runs of each model, side by side (default 100)",
        "report": "where to write the Markdown report (default: <run>/release_gate.md)"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for flag in [a for a in argv if a.startswith("--") and a[2:] in KEYS]:  # `--against champion`, as CI writes it
        i = argv.index(flag)
        argv[i:i + 2] = [f"{flag[2:]}={argv[i + 1] if i + 1 < len(argv) else ''}"]
    try:
        args = cli_args.parse(argv, KEYS)
    except cli_args.HelpRequested:
        print(cli_args.help_text("edge-pipeline gate", __doc__.strip().split("\n\n")[0], KEYS))
        return 0
    except cli_args.UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        verdict = _run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(Path(verdict.report).read_text())
    print(f"report: {verdict.report}")
    return 1 if verdict.status == "fail" else 0


def _run(args: dict) -> Release:
    from omegaconf import OmegaConf

    from pipeline.report.schema import SchemaError
    from pipeline.tracking.gate import judge_run

    run = Path(str(args.get("run") or "outputs/latest")).expanduser()
    try:
        summary = Summary.load(run / "summary.json")
        cfg = OmegaConf.load(run / "config.yaml")
    except (SchemaError, OSError) as e:
        raise ConfigError(f"run={run}: not a finished run folder ({e}); name one: edge-pipeline gate run=outputs/runs/"
                          f"<recipe>/<run>") from None
    if summary.status != "success" or summary.judged is None:
        raise ConfigError(f"{run}: the run did not finish with a model ({summary.status}); there is nothing to gate")
    uri = summary.mlflow.get("tracking_uri")
    if not uri:
        raise ConfigError(f"{run}: the run was not tracked (tracking=none), so there is no registry to compare with")
    from mlflow.tracking import MlflowClient

    from pipeline.core import console

    with console.quiet(("mlflow", "alembic")):
        client = MlflowClient(uri)
        try:
            return judge_run(summary, cfg, client, str(args.get("against") or "champion"),
                             float(args["tolerance_pct"]) if args.get("tolerance_pct") else None,
                             int(args.get("iterations") or 100), Path(args["report"]) if args.get("report") else None)
        except ValueError as e:
            raise ConfigError(f"{e}") from None


if __name__ == "__main__":
    sys.exit(main())
