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
    from pipeline.app import run
    from pipeline.errors import PipelineError

    try:
        summary = run(cfg)
    except PipelineError as e:
        if e.exit_code == 2:  # a stage failure was already reported with its resume command
            logging.getLogger("pipeline").error("error: %s", e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    return summary.get("objective")


def main() -> None:
    config.register()
    try:
        _task()
    except SystemExit as e:
        # Hydra exits 1 on composition errors (unknown recipe/device, bad override); those are invalid config: 2.
        if e.code == 1 and not _entered:
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
