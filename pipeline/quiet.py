"""Third-party chatter off for the span of a call; the converters' name for `pipeline.console.quiet` (one mechanism:
in a run it routes the chatter into pipeline.log, outside one it raises the named loggers and ignores warnings)."""
from pipeline.console import quiet

__all__ = ["quiet"]
