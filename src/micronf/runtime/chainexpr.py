"""Parse Click-style chain expressions: ``CheckIPHeader -> L3L4Filter(default="allow") -> MacSwapper``.

Each element is a µNF type, optionally called with keyword arguments whose values are Python
literals (strings, numbers, lists, dicts, booleans): they become the µNF's config. Configs may also
come from a YAML/JSON file mapping node names (or µNF types) to configs; giving the same key both
inline and in the file is an error rather than a silent override.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import yaml


class ChainSyntaxError(ValueError):
    """A chain expression or config file that cannot be read; the message says where."""


def parse_chain(expr: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(type, inline config), ...]`` in chain order."""
    parts = [p.strip() for p in expr.split("->")]
    if not expr.strip() or any(not p for p in parts):
        raise ChainSyntaxError(f"empty element in chain {expr!r}: write 'A -> B -> C'")
    out: list[tuple[str, dict[str, Any]]] = []
    for k, part in enumerate(parts, start=1):
        try:
            node = ast.parse(part, mode="eval").body
        except SyntaxError as exc:
            raise ChainSyntaxError(f"element {k} {part!r}: {exc.msg}") from None
        if isinstance(node, ast.Name):
            out.append((node.id, {}))
            continue
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.args:
            raise ChainSyntaxError(f"element {k} {part!r}: expected Name or Name(key=value, ...)")
        config: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ChainSyntaxError(f"element {k} {part!r}: '**' is not allowed")
            try:
                config[kw.arg] = ast.literal_eval(kw.value)
            except ValueError:
                raise ChainSyntaxError(f"element {k} {part!r}: the value of {kw.arg!r} must be a literal "
                                       f"(string, number, list, dict, True/False)") from None
        out.append((node.func.id, config))
    return out


def load_config_file(path: Path) -> dict[str, dict[str, Any]]:
    """A mapping ``node name or µNF type -> config`` from YAML or JSON."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ChainSyntaxError(f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ChainSyntaxError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
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
