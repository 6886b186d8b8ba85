"""Pydantic validation errors in words: one way to name a bad field and say what is wrong with it.

Why one module, below everything: µNF configs (:mod:`micronf.runtime.nf`), Rx/Tx backend specs
(:mod:`micronf.io.specs`), the HTTP APIs' 422 replies (:mod:`micronf.api.httperrors`) and the
orchestrator's input files (:mod:`micronf.orchestrator.load`) all report pydantic's errors to a
person, so a bad field reads the same everywhere: ``rules[0].port: Extra inputs are not permitted
(got 80)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LINE_LIMIT = 200
"""Characters of one error line (a client's input is quoted in it, and may be huge)."""


def field_path(loc: Iterable[int | str], prefix: str = "") -> str:
    """``("vnfs", 2, "template")`` -> ``vnfs[2].template`` (after ``prefix``)."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out


def cut(text: str, limit: int = LINE_LIMIT) -> str:
    """``text``, or its first ``limit`` characters and its length when longer."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def describe_validation_errors(errors: Sequence[Mapping[str, Any]], *, where: str = "", max_errors: int = 20,
                               limit: int = LINE_LIMIT) -> str:
    """One ``field.path: problem (got value)`` per pydantic error (``errors()`` of a
    ``ValidationError``), paths under ``where``, joined with ``; ``: at most ``max_errors`` lines of
    at most ``limit`` characters each (a missing field quotes nothing)."""
    lines = []
    for e in errors[:max_errors]:
        path = field_path(e.get("loc", ()), where) or "(value)"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        got = f" (got {e['input']!r})" if "input" in e and e.get("type") != "missing" else ""
        lines.append(cut(f"{path}: {msg}{got}", limit))
    if len(errors) > max_errors:
        lines.append(f"and {len(errors) - max_errors} more errors")
    return "; ".join(lines)
