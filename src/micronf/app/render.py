"""Draw a composed µNF graph with Graphviz: DOT text, and SVG when the ``dot`` binary is installed.

µNFs are grouped in one box per VNF (the prefix of their name); Rx feeds the entry node and every
SFC output is an oval. Edges carry their label; a parallel group (several edges from one
``(src, label)``) is drawn dashed, and an edge that applies only to packets from one upstream node
(the ingress→egress mapping table of a consolidated µNF) says ``from <node>``. Drop exits are left
out: every µNF that may drop has them, and they would hide the shape of the graph.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from micronf.orchestrator.models import ComposedGraph

INSTALL_HINT = "install Graphviz for SVGs (apt-get install graphviz), or run: dot -Tsvg FILE.dot -o FILE.svg"


def _q(text: str) -> str:
    """A DOT string literal (JSON escaping is valid DOT escaping)."""
    return json.dumps(text, ensure_ascii=False)


def to_dot(graph: ComposedGraph, title: str) -> str:
    """The graph as Graphviz DOT text."""
    spec = graph.spec
    fanout = Counter((e.src, e.label, e.from_node) for e in spec.edges)
    lines = [f"digraph {_q(spec.name)} {{", f"  label={_q(title)}; labelloc=t; rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica];',
             "  edge [fontname=Helvetica, fontsize=10];",
             '  "@rx" [shape=circle, label="Rx", fillcolor=lightgrey];']
    vnfs: dict[str, list[str]] = {}
    for node in spec.nodes:
        vnfs.setdefault(node.name.split(".")[0], []).append(node.name)
    in_parallel = {e.dst for e in spec.edges if fanout[(e.src, e.label, e.from_node)] > 1}
    types = {n.name: n.type for n in spec.nodes}
    for k, (vnf, members) in enumerate(vnfs.items()):
        lines.append(f"  subgraph cluster_{k} {{ label={_q(vnf)}; style=dashed; color=grey;")
        for name in members:
            fill = ', fillcolor="#dbe9ff"' if name in in_parallel else ""
            lines.append(f"    {_q(name)} [label={_q(name.split('.', 1)[-1] + chr(10) + types[name])}{fill}];")
        lines.append("  }")
    lines.append(f'  "@rx" -> {_q(spec.entry)};')
    for e in spec.edges:
        label = e.label + (f" (from {e.from_node})" if e.from_node else "")
        style = ", style=dashed" if fanout[(e.src, e.label, e.from_node)] > 1 else ""
        lines.append(f"  {_q(e.src)} -> {_q(e.dst)} [label={_q(label)}{style}];")
    for out, endpoints in graph.outputs.items():
        lines.append(f'  {_q("@out:" + out)} [shape=oval, label={_q(out)}, fillcolor=lightgrey];')
        lines += [f"  {_q(node)} -> {_q('@out:' + out)} [label={_q(label)}];" for node, label in endpoints]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_drawing(graph: ComposedGraph, title: str, stem: Path) -> Path:
    """Write ``stem.dot`` and, when Graphviz is installed, ``stem.svg``; return the SVG or the DOT path."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    dot_path = stem.with_suffix(".dot")
    dot_path.write_text(to_dot(graph, title), encoding="utf-8")
    dot = shutil.which("dot")
    if dot is None:
        return dot_path
    svg_path = stem.with_suffix(".svg")
    subprocess.run([dot, "-Tsvg", "-o", str(svg_path), str(dot_path)], check=True, timeout=60,
                   capture_output=True)
    return svg_path
