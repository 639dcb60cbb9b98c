"""The Hydra entry point: `edge-pipeline run` / `python -m pipeline recipe=NAME device=NAME [key=value ...]`. Thin on
purpose: it maps errors to exit statuses and returns the objective(s) to sweepers; run(cfg) in pipeline.app does the
work. The entry scripts install pipeline.core.interrupts.while_starting() before importing this module."""
from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path



import hydra
from omegaconf import DictConfig

from pipeline.core import config, console

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
PLAN_FLAG = "--plan"  # print the resolved plan and what the cache will reuse, run nothing
_entered = False
_preview = False


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _task(cfg: DictConfig):
    global _entered
    _entered = True
    console.set_verbose(cfg.verbose)  # (also in a launcher's worker process, where main() did not run)
    console.quiet_environment()
    from pipeline.core import interrupts
    from pipeline.tracking import sweep
    from pipeline.app import run
    from pipeline.core.errors import PipelineError

    interrupts.install()  # SIGINT, SIGTERM (a scheduler), SIGHUP (a closed terminal): the run ends KILLED, whole
    job = sweep.job_context()  # None unless this is one job of a multirun
    try:
        if _preview or (job or {}).get("preview"):
            from pipeline.app import preview

            preview(cfg)
            return None
        summary = run(cfg, sweep=job, last=job is None)
    except PipelineError as e:
        if e.exit_code == 2:  # a stage failure was already reported with its resume command
            logging.getLogger("pipeline").error("error: %s", e)
        if job is not None:
            # In a sweep, raise instead of exiting: the launcher records a failed job, the other jobs go on, and the
            # sweeper decides the sweep's fate (basic: exit 1 at the end; Optuna: a FAIL trial).
            kind = "invalid configuration" if e.exit_code == 2 else "failed"
            raise sweep.JobFailed(f"job #{job['job']} {kind}: {e}", e.exit_code) from None
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", None) or interrupts.last_signal() or signal.SIGINT
        if not getattr(e, "reported", False):  # interrupted before the run had a folder: nothing was recorded
            logging.getLogger("pipeline").error("interrupted by %s before the run started: nothing ran and nothing "
                                                "was recorded", interrupts.name(signum))
        sys.exit(128 + signum)
    if job is not None:  # goes into the job's job.json (pipeline.tracking.sweep.SweepCallback.on_job_end)
        job["result"] = {"run_dir": summary.run_dir, "mlflow_run_id": summary.mlflow["run_id"],
                         "run_status": summary.status}
    # For sweepers: one float per objective metric (a single metric: a float); None where the number does not exist.
    values = list(summary.objective["values"].values())
    return values[0] if len(values) == 1 else values


def _unknown_key_hint(message: str) -> str:
    """For "Could not override 'a.b'": name the closest keys of the schema instead of Hydra's advice to append with
    `+` (which would only hide a typo)."""
    import difflib
    import re

    from omegaconf import DictConfig, OmegaConf

    m = re.search(r"Could not override '([^']+)'", message)
    if not m:
        return ""
    node, path = OmegaConf.structured(config.PipelineConfig), []
    for part in m.group(1).split("."):
        if not isinstance(node, DictConfig) or part not in node:
            keys = list(node.keys()) if isinstance(node, DictConfig) else []
            close = difflib.get_close_matches(part, keys, n=1)
            where = ".".join(path) or "the top level"
            return (f"{m.group(1)}: unknown key {part!r} under {where}." + (f" Did you mean {'.'.join([*path, close[0]])!r}?" if close else "")
                    + (f" Keys there: {', '.join(keys)}." if keys else "") + " Fix the override or the config file.")
        node, path = node[part], [*path, part]
    return ""


GROUP_WORDS = {"recipe": "recipe", "device": "device", "data": "data set", "model": "model", "tracking":
               "tracking", "sweep": "sweep preset"}


def _missing_option(message: str) -> str:
    """For Hydra's "Could not find 'device/pixl7'": the closest names and the list, without Hydra's search path."""
    import difflib
    import re

    m = re.search(r"Could not find '([\w-]+)/([^']+)'", message)
    if not m or not (Path(CONF_DIR) / m.group(1)).is_dir():
        return ""
    group, name = m.group(1), m.group(2)
    options = sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    word = GROUP_WORDS.get(group, group)
    return (f"{group}={name}: no {word} named {name!r}." + (f" Did you mean {close[0]!r}?"
                                                              if close else "")
            + f"\n{word[0].upper() + word[1:]}s: {', '.join(options)}.\n`edge-pipeline --help` describes each "
              f"recipe and device; conf/{group}/ holds their files.")


def _describe_invalid(e: BaseException) -> str:
    """One clear message for a configuration Hydra could not compose (exit 2), without a traceback."""
    import re

    import yaml
    from hydra.errors import CompactHydraException

    if isinstance(e, yaml.YAMLError) or isinstance(e.__cause__, yaml.YAMLError):
        err = e if isinstance(e, yaml.YAMLError) else e.__cause__
        return (f"error: a config file is not valid YAML: {err}\nFix that file at the line shown (indentation, a "
                f"missing ':' or an unclosed bracket or quote), then re-run.")
    text = str(e).strip()
    if isinstance(e.__cause__, Exception) and str(e.__cause__) not in text:
        text += "\n" + str(e.__cause__).strip()
    from pipeline.devices.catalog import merge_error_hint

    device_hint = merge_error_hint(text)  # a number where a device file needs a figure
    if device_hint:
        return f"error: {device_hint}"
    m = re.search(r"(?:Sweeping over Hydra's configuration is not supported|Could not override)[^']*"
                  r"'hydra\.sweeper\.params\.([^'=]+)(?:=([^']*))?'", text)
    if m:  # Hydra reads the dots of a search parameter's name as nesting, and refuses sweeps of hydra.* keys
        from pipeline.tracking.sweep import range_problem

        name, expr = m.group(1), m.group(2) or "RANGE"
        also = range_problem(name, f"{name}={expr}") if m.group(2) else None
        return (f"error: hydra.sweeper.params.{name}: a search range cannot be set under hydra.sweeper.params on the "
                f"command line. Pass it as {name}={expr} (the sweeper searches the command line's sweeps "
                f"too), or set it under hydra.sweeper.params in a sweep config (conf/sweep/*.yaml)."
                + (f"\nerror: {also}" if also else ""))
    missing = _missing_option(text)
    if missing:
        return f"error: {missing}"
    hint = _unknown_key_hint(text)
    if hint:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("To append to your config"))
        return f"error: {hint}\n{text}"
    m = re.search(r"Value '(.*)' of type '\w+' could not be converted to (\w+)\s+full_key: (\S+)", text)
    if m:
        return (f"error: {m.group(3)}: expects {m.group(2).lower()}, got {m.group(1)!r}. Fix the override or the "
                f"config file.\n{text}")
    fix = ("" if isinstance(e, CompactHydraException) and ("Available options" in text or "override_grammar" in text)
           else "\nFix the override or the config file named above; `python -m pipeline --help` lists the choices.")
    return f"error: the configuration could not be composed: {text}{fix}"


def main() -> None:
    global _preview
    console.quiet_environment()  # C++ log levels, read when a framework is first imported; verbose=true takes them back
    config.register()
    if sys.argv[1:] in (["--help"], ["-h"]):
        from pipeline.cli.help import text

        print(text())
        return
    plan_dir = None
    if PLAN_FLAG in sys.argv:
        sys.argv.remove(PLAN_FLAG)
        _preview = True
        # A sweep's launcher makes its sweep and job folders before any job runs: under --plan they go to a
        # throw-away folder, so that the plan of a sweep writes nothing under paths.outputs either.
        import tempfile

        plan_dir = tempfile.mkdtemp(prefix="edge-pipeline-plan-")
        sys.argv.append(f"hydra.sweep.dir={plan_dir}")
    from pipeline.tracking import sweep

    sweep.set_preview(_preview)
    try:
        _main(sweep)
    finally:
        if plan_dir:
            import shutil

            shutil.rmtree(plan_dir, ignore_errors=True)
        from pipeline.core import interrupts

        # first ignore (the interpreter's shutdown would put the default, a kill, back), then report what came before
        interrupts.ignore_from_now()
        if interrupts.late() is not None:
            print(f"note: {interrupts.name(interrupts.late())} arrived after the run was recorded; nothing was lost",
                  file=sys.stderr)


def _main(sweep) -> None:
    """Run Hydra's entry point and turn what escapes it into one message and an exit status."""
    from pipeline.core import interrupts

    interrupts.install()  # (again in _task, which a launcher may run in another process)
    # Composition errors (a YAML syntax error, an unknown key) reach us as exceptions instead of Hydra printing a
    # stack trace for some of them; we print one clear message and exit 2. Errors inside a run keep their traceback.
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _task()
    except sweep.SweepRefused as e:  # an invalid search space, before any job ran: the message names key and fix
        print(f"error: {e.error}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt as e:  # while composing, or a sweep's launcher between two jobs
        signum = getattr(e, "signum", None) or interrupts.last_signal() or signal.SIGINT
        sweep.finish_active(failed=True, killed=True)
        if not getattr(e, "reported", False):
            print(f"error: interrupted by {interrupts.name(signum)}"
                  + (": the sweep was stopped; finished jobs are kept" if sweep.started() else
                     " before the run started: nothing ran and nothing was recorded"), file=sys.stderr)
        sys.exit(128 + signum)
    except SystemExit as e:
        # A sweeper that raised on a failed job skips Hydra's on_multirun_end: close the sweep here (KILLED when a job
        # ended on a signal: exit 128 + signal).
        sweep.finish_active(failed=e.code not in (0, None),
                            killed=isinstance(e.code, int) and e.code - 128 in interrupts.SIGNALS)
        # Hydra exits 1 on composition errors (unknown recipe/device, bad override); those are invalid config: 2.
        # (In a sweep, jobs may run in other processes: a started sweep means composition succeeded.)
        if e.code == 1 and not _entered and not sweep.started():
            sys.exit(2)
        raise
    except Exception as e:
        if sweep.started():
            # A job failed and the sweeper re-raised it (HYDRA_FULL_ERROR above lets it reach us instead of Hydra's
            # exit 1): close the sweep parent run as FAILED and say which job, without a traceback.
            sweep.finish_active(failed=True)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        if _entered or user_full_error:
            raise
        print(_describe_invalid(e), file=sys.stderr)
        sys.exit(2)
    sweep.finish_active(failed=False)


if __name__ == "__main__":
    main()
