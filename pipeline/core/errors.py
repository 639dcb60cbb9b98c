"""Errors with an exit status: 2 = the configuration is invalid (nothing ran), 1 = a stage failed."""
from __future__ import annotations


class PipelineError(Exception):
    """Base class; `exit_code` is what the command line exits with."""

    exit_code = 1


class ConfigError(PipelineError):
    """The recipe, an override or the environment is invalid; raised before anything is written."""

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems in the configuration:\n" + "\n".join(f"  - {p}" for p in self.problems)


class StageError(PipelineError):
    """A stage failed while running. Finished stages stay cached."""

    exit_code = 1


class CheckFailed(StageError):
    """A stage computed its findings and one of its checks failed (parity below its thresholds, an int8 model no
    remedy brought within budget). `about` (artifact name -> pipeline.core.results.Findings) holds what it found, so the
    failed model's row shows its problems; the runner keeps it in the task record, never in the cache."""

    def __init__(self, message: str, about: dict | None = None):
        super().__init__(message)
        self.about = dict(about or {})


class NotRunnableHere(PipelineError):
    """The artifact's runtime does not exist on this host (e.g. Core ML on Linux). Not a failure: reported as such."""


class GateFailed(PipelineError):
    """gate.enforce=true and the final artifact misses a budget. The run finished; its summary is written."""

    exit_code = 1
