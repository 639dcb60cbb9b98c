"""Command line: `python -m pipeline recipe=NAME device=NAME [key=value ...]` (Hydra). Thin on purpose."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline import config

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
_entered = False


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _task(cfg: DictConfig):
    global _entered
    _entered = True
    from pipeline import sweep
    from pipeline.app import run
    from pipeline.errors import PipelineError

    job = sweep.job_context()  # None unless this is one job of a multirun (issue 6)
    try:
        summary = run(cfg, sweep=job)
    except PipelineError as e:
        if e.exit_code == 2:  # a stage failure was already reported with its resume command
            logging.getLogger("pipeline").error("error: %s", e)
        if job is not None:
            # In a sweep, raise instead of exiting: the launcher records a failed job, the other jobs go on, and the
            # sweeper decides the sweep's fate (basic: exit 1 at the end; Optuna: a FAIL trial).
            kind = "invalid configuration" if e.exit_code == 2 else "failed"
            raise sweep.JobFailed(f"job #{job['job']} {kind}: {e}", e.exit_code) from None
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    if job is not None:  # goes into the job's job.json (pipeline.sweep.SweepCallback.on_job_end)
        job["result"] = {"run_dir": summary["run_dir"], "mlflow_run_id": summary["mlflow"]["run_id"],
                         "run_status": summary["status"]}
    # For sweepers: one float per objective metric (a single metric: a float); None where the number does not exist.
    values = list(summary["objective"]["values"].values())
    return values[0] if len(values) == 1 else values


def main() -> None:
    config.register()
    from pipeline import sweep

    try:
        _task()
    except SystemExit as e:
        # A sweeper that raised on a failed job skips Hydra's on_multirun_end: close the sweep here.
        sweep.finish_active(failed=e.code not in (0, None))
        # Hydra exits 1 on composition errors (unknown recipe/device, bad override); those are invalid config: 2.
        # (In a sweep, jobs may run in other processes: a started sweep means composition succeeded.)
        if e.code == 1 and not _entered and not sweep.started():
            sys.exit(2)
        raise
    sweep.finish_active(failed=False)


if __name__ == "__main__":
    main()
