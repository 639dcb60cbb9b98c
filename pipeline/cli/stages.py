"""`edge-pipeline stages [type=NAME]`: every stage type with what it takes and makes, or one type's parameters with
their defaults and one-line docs, read from its Config dataclass (the comment beside each field). Imports no ML
framework: stage modules import theirs inside `run`."""
from __future__ import annotations

import dataclasses
import inspect
import io
import sys
import tokenize

from pipeline.core import arguments as cli_args

KEYS = {"type": "a stage type (e.g. quantize_onnx) or a generic type (export, quantize): its parameters"}


def field_docs(config: type) -> dict[str, str]:
    """{field: the comment on its line} of a dataclass and the dataclasses it extends, from their source."""
    docs: dict[str, str] = {}
    for klass in reversed(config.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(config: type) -> dict[str, str]:
    try:
        src = inspect.getsource(config)
    except (OSError, TypeError):
        return {}
    docs, line_field = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.start[0] not in line_field:
            line_field[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            docs[line_field[tok.start[0]]] = tok.string.lstrip("# ").strip()
    return docs


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory())  # type: ignore[misc]
    return "(required)"


def _type(f: dataclasses.Field, hints: dict) -> str:
    """The annotation as written, except that a closed set of values is spelled out ("one of: a | b")."""
    from pipeline.core.bounds import Choice

    for marker in getattr(hints.get(f.name), "__metadata__", ()):
        if isinstance(marker, Choice):
            return "one of: " + " | ".join(str(v) for v in marker.values)
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t.replace("typing.", "")


def parameters(cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, doc) of every parameter of a stage type."""
    import typing

    docs, hints = field_docs(cls.Config), typing.get_type_hints(cls.Config, include_extras=True)
    return [(f.name, _type(f, hints), _default(f), docs.get(f.name, "")) for f in dataclasses.fields(cls.Config)]


def _summary(cls: type) -> str:
    """The first sentence of the stage module's docstring, without the leading "`type`:"."""
    doc = inspect.getdoc(sys.modules[cls.__module__]) or inspect.getdoc(cls) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    first = first.split(": ", 1)[1] if first.startswith("`") and ": " in first[:40] else first
    return first.split(". ")[0].rstrip(".")


def _takes(cls: type) -> str:
    from pipeline.core.artifacts import FORMATS

    return "any model" if set(cls.accepts) >= set(FORMATS) else "/".join(cls.accepts) or "nothing"


def describe(name: str, registry: dict[str, type]) -> str:
    from pipeline.report.table import render

    impls = {c.type: c for c in registry.values() if c.implements and c.implements[0] == name}
    if name not in registry and not impls:
        import difflib

        generic = sorted({c.implements[0] for c in registry.values() if c.implements})
        close = difflib.get_close_matches(name, [*registry, *generic], n=1)
        raise cli_args.UsageError(f"unknown stage type {name!r}." + (f" Did you mean {close[0]!r}?" if close else "")
                                  + f" Types: {', '.join(sorted(registry))}; generic: {', '.join(generic)}.")
    if impls:  # a generic type: what it resolves to, and each implementation's parameters
        out = [f"{name}: generic; the device decides which of these it becomes (pin one with stages.NAME.format=F):"]
        for t in sorted(impls):
            out += ["", describe(t, registry)]
        return "\n".join(out)
    cls = registry[name]
    takes = _takes(cls)
    head = f"{name}: {_summary(cls)}\n  takes {takes}; makes {cls.produces or 'no model (it reports)'}"
    rows = [[n, t, d, doc] for n, t, d, doc in parameters(cls)]
    return head + "\n" + "\n".join(render(["parameter", "type", "default", "meaning"], rows, wrap=("meaning", "type"),
                                          drop_empty=False))


def listing(registry: dict[str, type]) -> str:
    from pipeline.report.table import render

    rows = [[t, _takes(c), c.produces or "-", _summary(c)] for t, c in sorted(registry.items())]
    return "\n".join(render(["type", "takes", "makes", "what it does"], rows, wrap=("what it does", "takes"),
                            drop_empty=False)) + "\n\nedge-pipeline stages type=NAME prints a type's parameters."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = cli_args.parse(argv, KEYS, positional="types")
        from pipeline.stages import discover

        registry = discover()
        names = [*args.get("types", []), *([args["type"]] if "type" in args else [])]
        print("\n\n".join(describe(n, registry) for n in names) if names else listing(registry))
    except cli_args.HelpRequested:
        print(cli_args.help_text("edge-pipeline stages", __doc__.strip().splitlines()[0], KEYS, "types"))
    except cli_args.UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
