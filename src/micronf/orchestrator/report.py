"""What ``micronf plan`` prints: the graph before and after optimization, and the rewrites."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from micronf.orchestrator.compose import ComposedGraph, Composition, Rewrite
from micronf.runtime.graph import GraphError, plan


def graph_table(graph: ComposedGraph, title: str) -> Table:
    """One row per µNF: type, config, where each label leads (``from`` = mapping-table entry), hints."""
    table = Table(title=title, title_justify="left")
    for column in ("µNF", "type", "config", "next") + (("placement",) if graph.placement else ()):
        table.add_column(column, overflow="fold")
    spec = graph.spec
    for node in spec.nodes:
        nexts = [escape(f"{e.label} → {e.dst}" + (f" (from {e.from_node})" if e.from_node else ""))
                 for e in spec.edges if e.src == node.name]
        nexts += [f"{escape(label)} → [bold]{escape(out)}[/]" for out, ends in graph.outputs.items()
                  for n, label in ends if n == node.name]
        hint = graph.placement.get(node.name)
        hints = [escape(", ".join(f"{k}={v}" for k, v in hint.model_dump(exclude_none=True).items()))] if hint else []
        name = f"{escape(node.name)} [dim](entry)[/]" if node.name == spec.entry else escape(node.name)
        config = escape(json.dumps(node.config, separators=(",", ":"))) if node.config else ""
        table.add_row(name, node.type, config, "\n".join(nexts), *hints)
    return table


def rewrites_table(rewrites: list[Rewrite]) -> Table:
    """One row per rewrite, in the order they were applied."""
    table = Table("#", "rewrite", "µNFs", "why", title="rewrites", title_justify="left")
    for k, r in enumerate(rewrites, 1):
        table.add_row(str(k), r.kind, escape("\n".join(r.nodes)), escape(r.reason))
    return table


def print_plan(console: Console, comp: Composition, drawings: list[Path]) -> None:
    """Print the whole dry run: before, after, rewrites, wiring of the result, drawings written."""
    before, after = comp.before.spec, comp.after.spec
    console.print(graph_table(comp.before, f"before: {len(before.nodes)} µNFs (templates joined along the SFC)"))
    console.print(graph_table(comp.after, f"after: {len(after.nodes)} µNFs (optimized)"))
    if comp.rewrites:
        console.print(rewrites_table(comp.rewrites))
    else:
        console.print("no rewrite applies: the optimized graph is the joined one")
    counts = {kind: sum(r.kind == kind for r in comp.rewrites) for kind in ("remove", "consolidate", "parallelize")}
    console.print(", ".join(f"{n} {kind}" for kind, n in counts.items()) + f": {len(before.nodes)} → "
                  f"{len(after.nodes)} µNFs")
    try:
        layout = plan(comp.after.spec)  # can the runtime wire it?
    except GraphError as exc:
        console.print(f"[yellow]not wired here:[/] {escape(str(exc))}")
    else:
        exits = ", ".join(f"{e.name} ({comp.after.output_of(e.node, e.verdict)})" for e in layout.exits)
        console.print(f"wiring: {len(layout.processes)} processes, {layout.n_rings - len(layout.spare_rings)} rings; "
                      f"exits: {escape(exits)}")
    for path in drawings:
        console.print(f"wrote {escape(str(path))}")
    if not drawings:
        console.print("[dim]a dry run writes nothing; --out DIR draws both graphs there[/]")
