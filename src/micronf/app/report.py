"""What ``micronf plan`` prints: the graph before and after optimization, the rewrites, and the
arrangement (pipelined, mix or replicas) with every alternative's predicted rate."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from micronf.orchestrator.arrange import Arrangement
from micronf.orchestrator.models import ComposedGraph, Composition, Rewrite
from micronf.runtime.graph import GraphError, plan

TABLE_ROWS = 1000
"""Tables longer than this print as plain lines, one per row: the same cells, without the layout
that makes rich take seconds per thousand rows (a 10,000-µNF plan prints in about a second)."""


def graph_rows(graph: ComposedGraph) -> list[list[Text]]:
    """One row per µNF: name, type, config, where each label leads (``from`` = mapping-table entry),
    and placement hints when the graph has some."""
    spec = graph.spec
    nexts: dict[str, list[str]] = defaultdict(list)
    for e in spec.edges:
        nexts[e.src].append(f"{e.label} → {e.dst}" + (f" (from {e.from_node})" if e.from_node else ""))
    exits: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for out, ends in graph.outputs.items():
        for n, label in ends:
            exits[n].append((label, out))
    rows = []
    for node in spec.nodes:
        name = Text(node.name)
        if node.name == spec.entry:
            name.append(" ").append("(entry)", "dim")
        goes = Text("\n".join(nexts[node.name]))
        for label, out in exits[node.name]:
            goes.append(f"\n{label} → " if goes else f"{label} → ")
            goes.append(out, "bold")
        config = json.dumps(node.config, separators=(",", ":")) if node.config else ""
        row = [name, Text(node.type), Text(config), goes]
        if graph.placement:
            hint = graph.placement.get(node.name)
            row.append(Text(", ".join(f"{k}={v}" for k, v in hint.model_dump(exclude_none=True).items())
                            if hint else ""))
        rows.append(row)
    return rows


def graph_table(graph: ComposedGraph, title: str) -> Table:
    """:func:`graph_rows` as a table."""
    return _table(title, ["µNF", "type", "config", "next"] + (["placement"] if graph.placement else []),
                  graph_rows(graph))


def rewrites_rows(rewrites: list[Rewrite]) -> list[list[Text]]:
    """One row per rewrite, in the order they were applied."""
    return [[Text(str(k)), Text(r.kind), Text("\n".join(r.nodes)), Text(r.reason)] for k, r in enumerate(rewrites, 1)]


def rewrites_table(rewrites: list[Rewrite]) -> Table:
    """:func:`rewrites_rows` as a table."""
    return _table("rewrites", ["#", "rewrite", "µNFs", "why"], rewrites_rows(rewrites))


def _table(title: str, columns: list[str], rows: list[list[Text]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _print_rows(console: Console, title: str, columns: list[str], rows: list[list[Text]]) -> None:
    """A table, or past :data:`TABLE_ROWS` rows the same cells as tab-separated lines (newlines in a
    cell become commas) under a header line, written straight to the console's file (rich would
    lay out every line)."""
    if len(rows) <= TABLE_ROWS:
        console.print(_table(title, columns, rows))
        return
    console.print(f"{escape(title)} [dim](one line per row: {', '.join(columns)})[/]")
    console.file.write("".join("\t".join(cell.plain.replace("\n", ", ") for cell in row) + "\n" for row in rows))


def print_plan(console: Console, comp: Composition, drawings: list[Path]) -> None:
    """Print the whole dry run: before, after, rewrites, wiring of the result, drawings written."""
    before, after = comp.before.spec, comp.after.spec
    for graph, title in ((comp.before, f"before: {len(before.nodes)} µNFs (templates joined along the SFC)"),
                         (comp.after, f"after: {len(after.nodes)} µNFs (optimized)")):
        columns = ["µNF", "type", "config", "next"] + (["placement"] if graph.placement else [])
        _print_rows(console, title, columns, graph_rows(graph))
    if comp.rewrites:
        _print_rows(console, "rewrites", ["#", "rewrite", "µNFs", "why"], rewrites_rows(comp.rewrites))
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


def print_arrangement(console: Console, arr: Arrangement) -> None:
    """How the graph would run on the CPUs: one row per alternative (predicted Mpps, cycles per
    packet of the whole machine and of the busiest core, cores kept busy), one line each saying
    why (and what loads the busiest core), then the choice and its reason."""
    cpus = ", ".join(map(str, arr.cpus)) if arr.cpus else "unknown"
    table = Table(title=f"arrangement on CPUs {cpus} (mode {arr.requested}), predicted by the cost model",
                  title_justify="left")
    for column in ("", "arrangement", "Mpps", "cyc/pkt", "busiest core cyc/pkt", "cores"):
        table.add_column(column, justify="left" if column in ("", "arrangement") else "right")
    for alt in arr.alternatives:
        chosen = alt == arr.chosen
        name = alt.name + (f" x{alt.replicas}" if alt.mode == "replicas" and alt.mpps is not None else "")
        table.add_row("→" if chosen else "", Text(name, "bold" if chosen else ""),
                      "-" if alt.mpps is None else f"{alt.mpps:.2f}",
                      "-" if alt.cycles_per_packet is None else f"{alt.cycles_per_packet:.0f}",
                      "-" if alt.bottleneck_cycles is None else f"{alt.bottleneck_cycles:.0f}",
                      str(alt.cores) if alt.cores else "-")
    console.print(table)
    for alt in arr.alternatives:
        busiest = f" [dim](busiest {escape(alt.bottleneck)})[/]" if alt.mode == "pipelined" and alt.bottleneck else ""
        console.print(f"  {escape(alt.name)}: {escape(alt.why)}{busiest}")
    replicas = f" x{arr.chosen.replicas}" if arr.chosen.mode == "replicas" else ""
    console.print(f"chosen: [bold]{escape(arr.chosen.name)}{replicas}[/] ({escape(arr.reason)})")
    console.print(f"[dim]costs: {escape(arr.costs)}[/]")
