"""``bench/plan.py --measure``: the cost model's predicted rates against measured ones, on this machine.

For each mode (``--modes``, default pipelined and replicas) the SFC is arranged for this
machine's CPUs with that mode forced (:func:`micronf.orchestrator.arrange.arrange`), placed as
the orchestrator places it, and deployed on an in-process agent with the paper's traffic at full
speed (the generator unpaced). After ``--warmup`` seconds, two samples ``--seconds`` apart give

- ``measured Mpps``: packets the graph processed (sent + dropped inside the graph; not those the
  Rx service could not hand in) per second;
- in-situ cycles per packet, to set against the table's: each µNF's runtime ``cycles`` counter
  over its packets, and the Rx and Tx services' CPU time (``/proc/PID/stat``, user + system, at
  the table's clock) over the frames each handled: the cost in place, with cache misses, rings
  and idle polling, where ``bench/nfs.py`` times a kernel alone;
- the work per packet: the CPU time of every process of the deployment (µNF processes or
  replicas, Rx, Tx) at the table's clock over the packets processed, against the model's
  ``cycles_per_packet``. CPU time does not count the time a process waits preempted (the TSC
  counters do), so this holds on a loaded machine; it does count idle polling.

Modes are interleaved ``--repeat`` times and the medians reported. A replicas deployment the
agent runs as something else (an agent without replica support runs the graph pipelined) is
reported as such, not measured as replicas.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from micronf.agent.core import Agent
from micronf.api.models import GraphStats
from micronf.io.generator_spec import paper_traffic
from micronf.orchestrator.arrange import ModeChoice, arrange
from micronf.orchestrator.compose import compose
from micronf.orchestrator.costmodel import CostTable, load_table
from micronf.orchestrator.load import load_sfc
from micronf.orchestrator.placement import AgentRef, Candidate, Traffic, place

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _processed(s: GraphStats) -> int:
    """Packets that entered the graph and left it: sent, or dropped inside (not at Rx)."""
    return sum(t.get("frames", 0) for t in s.tx.values()) + sum(
        n for k, n in s.drops.items() if not k.startswith("@rx."))


def _sample(agent: Agent, name: str, pids: dict[str, int]) -> tuple[float, GraphStats, dict[str, float]]:
    return time.monotonic(), agent.stats(name), {k: _cpu_s(p) for k, p in pids.items()}


def measure_once(sfc: Path, mode: ModeChoice, table: CostTable, seconds: float, warmup: float) -> dict[str, Any]:
    """One deployment of ``sfc`` arranged in ``mode``: predicted and measured (see the module docstring)."""
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    bundle = load_sfc(sfc)
    comp, arr = arrange(bundle, compose(bundle), cpus, table, mode=mode)
    name = f"plan-measure-{os.getpid()}"
    traffic = Traffic(rx=paper_traffic().model_dump(mode="json"))
    req = place(comp.after, name, [Candidate(AgentRef("http://localhost", "local", cpus), 0)], traffic,
                arrangement=arr.chosen)[0].request.model_copy(update={"ring_capacity": 4096})
    out: dict[str, Any] = {"mode": mode, "arrangement": arr.chosen.name, "replicas": arr.chosen.replicas,
                           "predicted_mpps": arr.chosen.mpps}
    with Agent() as agent:
        agent.deploy(req)
        try:
            info = agent.deployment(name)
            unf_procs = [p for p in info.processes if p.nodes not in (["@rx"], ["@tx"])]
            if req.mode == "replicas" and len(unf_procs) != req.replicas:
                out["note"] = (f"the agent ran {len(unf_procs)} µNF processes, not {req.replicas} replicas "
                               "(no replica support in this tree): not measured")
                return out
            pids = {p.nodes[0] if p.nodes in (["@rx"], ["@tx"]) else f"proc{p.index}": p.pid for p in info.processes}
            time.sleep(warmup)
            t0, s0, c0 = _sample(agent, name, pids)
            time.sleep(seconds)
            t1, s1, c1 = _sample(agent, name, pids)
        finally:
            agent.remove(name)
    processed = _processed(s1) - _processed(s0)
    out["measured_mpps"] = processed / (t1 - t0) / 1e6
    out["predicted_work"] = arr.chosen.cycles_per_packet
    out["measured_work"] = sum(c1[k] - c0[k] for k in c1) * table.clock_hz / max(processed, 1)
    before = {n.name: n.runtime for n in s0.nodes}
    insitu: dict[str, float] = {}
    for n in s1.nodes:
        rx = n.runtime.get("rx", 0) - before.get(n.name, {}).get("rx", 0)
        if rx:
            cyc = n.runtime.get("cycles", 0) - before.get(n.name, {}).get("cycles", 0)
            insitu[n.type] = insitu.get(n.type, 0.0) + cyc / rx
    handled = {"@rx": s1.rx.get("frames", 0) - s0.rx.get("frames", 0),
               "@tx": sum(t.get("frames", 0) for t in s1.tx.values()) - sum(t.get("frames", 0) for t in s0.tx.values())}
    for key, pid_key in (("rx", "@rx"), ("tx", "@tx")):
        if pid_key in c0 and handled[pid_key]:
            insitu[key] = (c1[pid_key] - c0[pid_key]) * table.clock_hz / handled[pid_key]
    out["insitu_cycles"] = insitu
    return out


def run(sfc: Path, modes: list[ModeChoice], repeat: int, seconds: float, warmup: float) -> list[dict[str, Any]]:
    """``repeat`` interleaved rounds of every mode; per mode the medians."""
    table = load_table()
    rounds = [[measure_once(sfc, m, table, seconds, warmup) for m in modes] for _ in range(repeat)]
    summary = []
    for k in range(len(modes)):
        runs = [r[k] for r in rounds]
        row = dict(runs[0])
        measured = [r["measured_mpps"] for r in runs if "measured_mpps" in r]
        if measured:
            row["measured_mpps"] = statistics.median(measured)
            row["measured_runs"] = measured
            row["measured_work"] = statistics.median(r["measured_work"] for r in runs if "measured_work" in r)
            keys = set().union(*(r["insitu_cycles"] for r in runs if "insitu_cycles" in r))
            row["insitu_cycles"] = {key: statistics.median(r["insitu_cycles"].get(key, 0.0) for r in runs
                                                           if "insitu_cycles" in r) for key in sorted(keys)}
        summary.append(row)
    return summary


def report(rows: list[dict[str, Any]], table: CostTable) -> list[str]:
    """The comparison as text lines: predicted vs measured per mode, then in-situ vs table cycles."""
    lines = [f"{'mode':>10} {'arrangement':>16} {'predicted Mpps':>15} {'measured Mpps':>14} {'ratio':>6} "
             f"{'predicted work':>15} {'measured work':>14}"]
    for r in rows:
        if "measured_mpps" not in r:
            lines.append(f"{r['mode']:>10} {r['arrangement']:>16} {r['predicted_mpps']:>15.2f}  {r.get('note', '')}")
            continue
        lines.append(f"{r['mode']:>10} {r['arrangement']:>16} {r['predicted_mpps']:>15.2f} {r['measured_mpps']:>14.2f} "
                     f"{r['measured_mpps'] / r['predicted_mpps']:>6.2f} {r['predicted_work']:>15.0f} "
                     f"{r['measured_work']:>14.0f}")
    for r in rows:
        if "insitu_cycles" in r:
            cells = ", ".join(f"{k} {v:.0f} (table {_table_value(table, k):.0f})"
                              for k, v in r["insitu_cycles"].items())
            lines.append(f"in situ, {r['arrangement']}: cycles/packet {cells}")
    return lines


def _table_value(table: CostTable, key: str) -> float:
    if key == "rx":
        return table.io.rx
    if key == "tx":
        return table.io.tx + table.io.ring_hop
    return table.kernel(key) + table.io.ring_hop
