"""The one grammar of `edge-pipeline`'s own commands (pipeline.cli and the modules they run): `key=value` arguments
(as Hydra overrides are written), bare words for a command's positional operands, `--help`. Unknown keys are refused
with the closest key and the list."""
from __future__ import annotations

import difflib


class UsageError(Exception):
    """Bad arguments: the message names the problem and the fix (exit 2)."""


class HelpRequested(Exception):
    pass


def parse(argv: list[str], keys: dict[str, str], positional: str | None = None) -> dict[str, str | list[str]]:
    """{key: value} from `key=value` arguments; bare words collect under `positional` (a list) when the command
    takes operands. Raises HelpRequested for -h/--help and UsageError naming an unknown key or a stray word."""
    out: dict[str, str | list[str]] = {}
    for a in argv:
        if a in ("-h", "--help"):
            raise HelpRequested
        key, sep, value = a.partition("=")
        if sep and key in keys:
            out[key] = value
        elif sep:
            close = difflib.get_close_matches(key, list(keys), n=1)
            raise UsageError(f"unknown key {key!r}." + (f" Did you mean {close[0]!r}?" if close else "")
                             + f" Keys: {', '.join(keys)}.")
        elif positional:
            out.setdefault(positional, []).append(a)  # type: ignore[union-attr]
        else:
            raise UsageError(f"unexpected argument {a!r}: write key=value (keys: {', '.join(keys)})")
    return out


def help_text(prog: str, summary: str, keys: dict[str, str], positional: str | None = None) -> str:
    """The command's --help: what it does, its usage line, one line per key."""
    w = max([len(k) for k in keys] + [10]) + 2
    usage = f"Usage: {prog}" + (f" [{positional.upper()} ...]" if positional else "") + " [key=value ...]"
    return "\n".join([summary, "", usage, "", "Keys:", *(f"  {k.ljust(w)}{v}" for k, v in keys.items())])
