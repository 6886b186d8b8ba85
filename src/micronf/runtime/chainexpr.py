"""Parse Click-style chain expressions: ``CheckIPHeader -> L3L4Filter(default="allow") -> MacSwapper``.

Each element is a µNF type, optionally called with keyword arguments whose values are Python
literals (strings, numbers, lists, dicts, booleans): they become the µNF's config. Configs may also
come from a YAML/JSON file mapping node names (or µNF types) to configs; giving the same key both
inline and in the file is an error rather than a silent override.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

from micronf.documents import SpecError, read_document


class ChainSyntaxError(ValueError):
    """A chain expression or config file that cannot be read; the message says where."""


_LITERALS = "a literal (string, number, true/false, None, or a list or dict of them with string keys)"


def parse_chain(expr: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(type, inline config), ...]`` in chain order."""
    parts = [p.strip() for p in expr.split("->")]
    if not expr.strip() or any(not p for p in parts):
        raise ChainSyntaxError(f"empty element in chain {_show(expr)}: write 'A -> B -> C'")
    out: list[tuple[str, dict[str, Any]]] = []
    for k, part in enumerate(parts, start=1):
        where = f"element {k} {_show(part)}"
        try:
            node = ast.parse(part, mode="eval").body
        except SyntaxError as exc:
            raise ChainSyntaxError(f"{where}: {exc.msg}") from None
        except (ValueError, MemoryError, RecursionError) as exc:  # surrogates; nesting too deep for the parser
            why = "nested too deeply" if not isinstance(exc, ValueError) else "text Python cannot read"
            raise ChainSyntaxError(f"{where}: {why}") from None
        if isinstance(node, ast.Name):
            out.append((node.id, {}))
            continue
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.args:
            raise ChainSyntaxError(f"{where}: expected Name or Name(key=value, ...)")
        config: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ChainSyntaxError(f"{where}: '**' is not allowed")
            if kw.arg in config:
                raise ChainSyntaxError(f"{where}: {kw.arg!r} is given twice")
            try:
                value = ast.literal_eval(kw.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                value = ...  # not a literal, or one Python cannot build (a list as a dict key)
            if not _plain(value):
                raise ChainSyntaxError(f"{where}: the value of {kw.arg!r} must be {_LITERALS}") from None
            config[kw.arg] = value
        out.append((node.func.id, config))
    return out


def _plain(value: Any) -> bool:
    """True for JSON-like data: what a µNF config holds (no tuples, sets, bytes, complex, inf or nan)."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                return False
            todo += v.values()
        elif isinstance(v, list):
            todo += v
        elif not isinstance(v, str | int | float | bool | None):
            return False
    return True


def _show(text: str) -> str:
    """``text`` quoted, shortened to 60 characters (an error message stays one readable line)."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def load_config_file(path: Path) -> dict[str, dict[str, Any]]:
    """A mapping ``node name or µNF type -> config`` from YAML or JSON (read as the orchestrator reads
    its input files: the same limits on nesting, value types and size)."""
    try:
        data = read_document(path)
    except SpecError as exc:
        raise ChainSyntaxError(f"{path}: expected {exc.expected}, found {exc.found}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ChainSyntaxError(f"{path}: expected a mapping of node name (or µNF type) to a config mapping")
    return {str(k): v for k, v in data.items()}


def merge_configs(elements: list[tuple[str, dict[str, Any]]], names: list[str],
                  from_file: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Add file configs (by node name, else by type) to the inline ones; a key given twice is an error."""
    unknown = set(from_file) - set(names) - {t for t, _ in elements}
    if unknown:
        raise ChainSyntaxError(f"config file names {', '.join(sorted(unknown))}, which are not in the chain "
                               f"(nodes: {', '.join(names)})")
    merged = []
    for (nf_type, inline), name in zip(elements, names, strict=True):
        extra = from_file.get(name, from_file.get(nf_type, {}))
        clash = set(extra) & set(inline)
        if clash:
            raise ChainSyntaxError(f"{name}: {', '.join(sorted(clash))} given both inline and in the config file")
        merged.append((nf_type, {**extra, **inline}))
    return merged
