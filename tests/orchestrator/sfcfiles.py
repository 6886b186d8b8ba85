"""Write SFC requests, templates and descriptor files for the orchestrator tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write_files(directory: Path, files: dict[str, str | dict[str, Any]]) -> None:
    """Each value is the file's text, or a document dumped as YAML (or JSON for .json names)."""
    import json

    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        elif name.endswith(".json"):
            path.write_text(json.dumps(content))
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False))


def template(name: str, nodes: list[tuple[str, str, dict[str, Any]]], links: list[tuple[str, str | None, str]],
             outputs: dict[str, list[str]]) -> dict[str, Any]:
    """A vnf-template document: nodes (name, type, config), links (src, label, dst), outputs."""
    return {"kind": "vnf-template", "name": name,
            "nodes": [{"name": n, "type": t, "config": c} for n, t, c in nodes],
            "links": [{"src": s, "dst": d} | ({"label": lab} if lab else {}) for s, lab, d in links],
            "outputs": outputs}


def sfc(vnfs: list[dict[str, Any]], links: list[tuple[str, str, str]], name: str = "test") -> dict[str, Any]:
    """An sfc document importing every YAML/JSON file under templates/."""
    return {"kind": "sfc", "name": name, "imports": ["templates/*"], "vnfs": vnfs,
            "links": [{"src": s, "label": lab, "dst": d} for s, lab, d in links]}
