"""Input files as plain data: YAML or JSON parsed with limits, and :class:`SpecError`, the one error
of an invalid input file (file, field path, what was expected, what was found).

Why a module of its own, below everything: the orchestrator's input files (SFC requests, templates,
µNF descriptors) and ``micronf chain --config`` files are read the same way, with the same limits
on nesting, value types and size, whatever layer reads them.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import yaml


class SpecError(ValueError):
    """An invalid input file: where (file and field path), what was expected and what was found."""

    def __init__(self, file: str, path: str, expected: str, found: str) -> None:
        self.file = file
        self.path = path
        self.expected = expected
        self.found = found
        text = f"{file}: {path or '(document)'}: expected {expected}, found {found}"
        super().__init__(text.replace("\r", "\\r").replace("\n", "\\n"))  # one line, whatever the input's keys


def show(value: Any) -> str:
    """``repr(value)``, cut to 80 characters: how an error quotes what it found."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- reading ----------------------------------------------------------------------------------
MAX_DEPTH = 100
"""How deeply lists and mappings may nest in an input file (the examples: 5). Deeper is refused,
for YAML before it is built: the YAML composers (and everything that walks the result) recurse per
level, and libyaml's crashes the interpreter at some 20,000 levels."""

_Yaml: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: ~7x faster


def read_document(path: Path) -> Any:
    """Parse a JSON or YAML file (see :func:`parse_document`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), "", "a readable UTF-8 file", f"{type(exc).__name__}: {exc}") from None
    return parse_document(text, str(path))


def parse_document(text: str, file: str) -> Any:
    """Parse the JSON or YAML ``text`` of ``file``: by its extension (.json, .yaml, .yml), otherwise
    by its content. Only plain data is accepted (see :func:`_plain_problem`)."""
    suffix = PurePosixPath(file).suffix
    as_json = suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip().startswith("{"))
    too_deep = f"lists and mappings nested deeper than {MAX_DEPTH}"
    if as_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(file, "", "valid JSON", f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None
        except RecursionError:
            raise SpecError(file, "", "plain data", too_deep) from None
    else:
        try:
            if _yaml_depth(text) > MAX_DEPTH:
                raise SpecError(file, "", "plain data", too_deep)
            data = yaml.load(text, Loader=_Yaml)
        except yaml.YAMLError as exc:
            raise SpecError(file, "", "valid YAML", _yaml_problem(text, exc)) from None
    problem = _plain_problem(data, budget=2 * len(text) + 10_000)
    if problem is not None:
        raise SpecError(file, "", "plain data", problem)
    return data


def _yaml_problem(text: str, exc: yaml.YAMLError) -> str:
    """What is wrong with the YAML ``text`` (libyaml said ``exc``): in the pure-Python parser's words
    when it fails too, since they say what it expected and what it found."""
    try:
        yaml.load(text, Loader=yaml.SafeLoader)  # the error comes before any nesting deeper than MAX_DEPTH
    except yaml.YAMLError as py_exc:
        exc = py_exc
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{getattr(exc, 'problem', None) or exc}{where}".split())


def _yaml_depth(text: str) -> int:
    """The deepest nesting of the YAML ``text``, from the parser's events (no document built)."""
    depth = deepest = 0
    for event in yaml.parse(text, Loader=_Yaml):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return deepest


_PLAIN = (str, int, float, bool, type(None))


def _plain_problem(data: Any, budget: int) -> str | None:
    """Why ``data`` is not plain JSON-like data (nested at most :data:`MAX_DEPTH` deep, mapping keys
    strings, values strings, numbers, booleans, null, lists and mappings, at most ``budget`` values
    counting every use of a YAML alias), or None. YAML also makes dates, sets and binary, which no
    µNF config takes and not every consumer can store, and aliases of aliases make a few hundred
    bytes stand for billions of values that everything after the parser would walk."""
    todo = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        budget -= 1
        if budget < 0:
            return "far more values than the text spells out (YAML aliases expanding to too much)"
        if isinstance(value, _PLAIN):
            continue
        if not isinstance(value, dict | list):
            return f"a value of type {type(value).__name__} (use strings, numbers, true/false, null, lists, mappings)"
        if depth > MAX_DEPTH:
            return f"lists and mappings nested deeper than {MAX_DEPTH}"
        if isinstance(value, dict):
            key = next((k for k in value if not isinstance(k, str)), None)
            if key is not None:
                return f"a mapping key that is not a string ({show(key)})"
            todo += [(v, depth + 1) for v in value.values()]
        else:
            todo += [(v, depth + 1) for v in value]
    return None
