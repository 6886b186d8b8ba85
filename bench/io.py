"""Benchmark: packet I/O backends, one section per path.

Section ``afpacket`` (raw AF_PACKET I/O over a veth pair): a sender process in namespace A runs
:class:`micronf.io.afpacket_tx.AfPacketTx` as fast as it can (bursts of ``--burst`` pool frames of one
size, UDP/IPv4, to a unicast MAC that is not the receiver's, so the receiving IP stack drops them at
once) into a veth whose peer is in namespace B, where a receiver process counts the frames
:class:`micronf.io.afpacket_rx.AfPacketRx` hands out. Both open their sockets through the spec's
``netns``; the sender is pinned to the first CPU, the receiver to the last. For every Tx mode
(``sendmmsg``, ``ring``) and frame size, ``--repeat`` runs (modes interleaved) of ``--seconds``
after ``--warmup``; the table shows medians:

* ``tx Mpps`` frames the sender handed to the kernel, ``rx Mpps``/``rx Gbps`` frames (and their
  bytes, Ethernet header to payload, no FCS/preamble) the receiver got;
* ``sock drops``: the Rx socket's ``PACKET_STATISTICS`` drops (its ring was full), ``veth drops``:
  frames the veth dropped (the receive backlog, ``net.core.netdev_max_backlog``, was full);
* ``rx CPU%``/``tx CPU%``: user + system time of each process over the window (getrusage). The
  kernel's work for a veth frame (xmit, the peer's receive softirq, the copy into the Rx ring)
  mostly runs on the *sender's* CPU, inside its send call or the softirq it raises;
* ``tx us/frame``: the sender's CPU time per frame sent. On a loaded machine the sender gets less
  than a core and Mpps follow the load; this cost hardly does, so compare the Tx modes on it too.

Expected on a 2-vCPU VM: a veth carries ~0.6-0.85 Mpps per core whatever user space does; the
Rx side should keep up with a few percent of a core.

Sections ``graph`` and ``graph-veth`` (paper Fig. 6, baseline performance: the agent's Rx
service and one µNF, MacSwapper, vs frame size 64..1500 B) deploy ``Rx -> MacSwapper -> Tx``
through an in-process agent, one deployment per size: ``graph`` with the synthetic generator at
full speed and a null Tx (the data path's own limit), ``graph-veth`` with AF_PACKET on a veth
(a sender in namespace A as above, the agent's sockets in namespace B, Tx out a veth to namespace
C): rx/tx Mpps are frames the Rx service read and the Tx service sent per second, drops are every
counted drop in the graph.

Usage::

    python bench/io.py [--only afpacket,graph,graph-veth] [--sizes 64,128,256,512,1024,1500] [--modes sendmmsg,ring]
                       [--seconds S] [--warmup S] [--repeat R] [--burst B] [--json]

Needs root (namespaces, AF_PACKET) and iproute2. ``micronf`` is imported from the environment,
else from ``src/`` next to this directory; the namespace helper is ``tests/netns.py``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import resource
import shlex
import statistics
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import base_facts, int_list, text_table

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SECTIONS = ("afpacket", "graph", "graph-veth")
TX_MODES = ("sendmmsg", "ring")
MAX_FRAME = 1514
_FORK = mp.get_context("fork")
Msg = dict[str, Any]


def _import(module: str) -> Any:
    """``module`` from micronf or tests, imported at run time (``src/`` and the repo root as fallbacks).

    Dynamic so that ``mypy bench/io.py`` checks this file on its own, like ``bench/ring.py``.
    """
    if importlib.util.find_spec("micronf") is None:
        sys.path.insert(0, str(ROOT / "src"))
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    return importlib.import_module(module)


def machine_facts() -> dict[str, Any]:
    """CPU, kernel, versions and load for the report header."""
    return base_facts() | {
        "netdev_max_backlog": Path("/proc/sys/net/core/netdev_max_backlog").read_text().strip()}


def udp_frame(size: int) -> bytes:
    """An Ethernet/IPv4/UDP frame of ``size`` bytes (no FCS) with a valid IP header checksum."""
    ip_len = size - 14
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, 1, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
                               bytes([10, 0, 0, 2])))
    words = struct.unpack("!10H", ip)
    csum = sum(words)
    csum = (csum & 0xFFFF) + (csum >> 16)
    struct.pack_into("!H", ip, 10, ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF)
    udp = struct.pack("!HHHH", 1234, 5678, ip_len - 20, 0)  # checksum 0: none (allowed for IPv4)
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    return eth + bytes(ip) + udp + bytes(size - 42)


# -- the two processes -----------------------------------------------------------------------
def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pin(cpu: int) -> None:
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def _window(conn: Connection, poll: Callable[[], None], snapshot: Callable[[], Msg]) -> None:
    """Report ready, get (t_start, t_end), run ``poll`` until t_end, send the window's deltas."""
    conn.send({"ready": True})
    t_start, t_end = conn.recv()
    while time.monotonic() < t_start:
        poll()
    before, cpu0, t0 = snapshot(), _cpu_seconds(), time.monotonic()
    while time.monotonic() < t_end:
        poll()
    after, cpu1, t1 = snapshot(), _cpu_seconds(), time.monotonic()
    out: Msg = {k: after[k] - before[k] for k in after}
    out["seconds"], out["cpu_seconds"] = t1 - t0, cpu1 - cpu0
    conn.send(out)


def receiver(conn: Connection, spec_kw: Msg, cpu: int) -> None:
    """Count what AfPacketRx hands out, in bursts of up to 1024 frames."""
    try:
        _pin(cpu)
        afp = _import("micronf.io.afpacket")
        afp_rx = _import("micronf.io.afpacket_rx")
        with afp_rx.AfPacketRx(afp.AfPacketSpec(**spec_kw)) as rx:
            rx.recv(0)  # compile / load the kernel before the clock starts
            _window(conn, lambda: rx.recv(1024), rx.stats)
    except BaseException as exc:
        conn.send({"error": f"receiver: {type(exc).__name__}: {exc}"})


def sender(conn: Connection, spec_kw: Msg, cpu: int, size: int, burst: int) -> None:
    """Send the same ``burst`` pool frames over and over; yield whenever the kernel takes nothing."""
    try:
        _pin(cpu)
        afp = _import("micronf.io.afpacket")
        afp_tx = _import("micronf.io.afpacket_tx")
        pool_mod = _import("micronf.dataplane.pool")
        pool = pool_mod.PacketPool.local(burst)
        handles = pool.alloc(burst)
        frame = udp_frame(size)
        for h in handles:
            pool.write_frame(int(h), frame)
        with afp_tx.AfPacketTx(afp.AfPacketSpec(**spec_kw)) as tx:
            tx.send(pool.arrays, handles, 0)  # compile / load the kernel before the clock starts

            def poll() -> None:
                if tx.send(pool.arrays, handles, burst) == 0:
                    os.sched_yield()

            _window(conn, poll, tx.stats)
    except BaseException as exc:
        conn.send({"error": f"sender: {type(exc).__name__}: {exc}"})


# -- one run ---------------------------------------------------------------------------------
@dataclass
class Run:
    """One measured window of one (mode, size)."""

    tx_mpps: float
    rx_mpps: float
    rx_gbps: float
    sock_drops: int
    veth_drops: int
    rx_cpu: float
    tx_cpu: float
    tx_us_per_frame: float
    would_block: int
    tx_errors: int


def _recv(conn: Connection, timeout: float, who: str) -> Msg:
    if not conn.poll(timeout):
        raise RuntimeError(f"{who} did not answer within {timeout:.0f} s")
    msg: Msg = conn.recv()
    if "error" in msg:
        raise RuntimeError(msg["error"])
    return msg


def run_afpacket(mode: str, size: int, args: argparse.Namespace) -> Run:
    """One sender → veth → receiver run in a fresh pair of namespaces."""
    netns = _import("tests.netns")
    cpus = sorted(os.sched_getaffinity(0))
    with netns.NetLab("bio") as lab:
        ns_a, ns_b = lab.netns(2)
        link = lab.veth(ns_a, ns_b)
        rx_conn, rx_child = _FORK.Pipe()
        tx_conn, tx_child = _FORK.Pipe()
        procs = [
            _FORK.Process(target=receiver, args=(rx_child, {"iface": link.if_b, "netns": ns_b}, cpus[-1])),
            _FORK.Process(target=sender, args=(tx_child, {"iface": link.if_a, "netns": ns_a, "tx_mode": mode},
                                               cpus[0], size, args.burst)),
        ]
        try:
            for p in procs:
                p.start()
            _recv(rx_conn, 120, "receiver")  # the first run may compile the kernels
            _recv(tx_conn, 120, "sender")
            t_start = time.monotonic() + 0.05 + args.warmup
            t_end = t_start + args.seconds
            for c in (rx_conn, tx_conn):
                c.send((t_start, t_end))
            time.sleep(max(0.0, t_start - time.monotonic()))
            veth0 = lab.link_stats(ns_a, link.if_a)["tx_dropped"]
            time.sleep(max(0.0, t_end - time.monotonic()))
            veth1 = lab.link_stats(ns_a, link.if_a)["tx_dropped"]
            rx = _recv(rx_conn, args.seconds + 30, "receiver")
            tx = _recv(tx_conn, args.seconds + 30, "sender")
        finally:
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join(10)
    return Run(
        tx_mpps=tx["frames"] / tx["seconds"] / 1e6,
        rx_mpps=rx["frames"] / rx["seconds"] / 1e6,
        rx_gbps=rx["bytes"] * 8 / rx["seconds"] / 1e9,
        sock_drops=int(rx["kernel_drops"]),
        veth_drops=int(veth1 - veth0),
        rx_cpu=100 * rx["cpu_seconds"] / rx["seconds"],
        tx_cpu=100 * tx["cpu_seconds"] / tx["seconds"],
        tx_us_per_frame=1e6 * tx["cpu_seconds"] / max(tx["frames"], 1),
        would_block=int(tx["would_block"]),
        tx_errors=int(tx["errors"]),
    )


# -- the section -----------------------------------------------------------------------------
@dataclass
class Cell:
    """All runs of one (mode, size) and their medians."""

    mode: str
    size: int
    runs: list[Run] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in self.runs))

    def to_json(self) -> Msg:
        med = {k: self.median(k) for k in asdict(self.runs[0])}
        return {"mode": self.mode, "size": self.size, "median": med, "runs": [asdict(r) for r in self.runs]}


@dataclass
class Section:
    """A benchmark section's result: its table lines and its JSON document."""

    name: str
    lines: list[str]
    doc: Msg


def section_afpacket(args: argparse.Namespace) -> Section:
    """AfPacketTx (each mode) → veth → AfPacketRx, per frame size, medians of ``--repeat`` runs."""
    cells = {(m, s): Cell(m, s) for s in args.sizes for m in args.modes}
    for rep in range(args.repeat):
        for (mode, size), cell in cells.items():
            cell.runs.append(run_afpacket(mode, size, args))
            r = cell.runs[-1]
            print(f"[afpacket {rep + 1}/{args.repeat}] {mode} {size} B: tx {r.tx_mpps:.3f} rx {r.rx_mpps:.3f} Mpps, "
                  f"rx CPU {r.rx_cpu:.1f}%", file=sys.stderr, flush=True)
    header = ("tx mode", "size B", "tx Mpps", "rx Mpps", "rx Gbps", "sock drops", "veth drops", "rx CPU%",
              "tx CPU%", "tx us/frame", "tx would-block")
    rows = [(c.mode, str(c.size), f"{c.median('tx_mpps'):.3f}", f"{c.median('rx_mpps'):.3f}",
             f"{c.median('rx_gbps'):.2f}", f"{c.median('sock_drops'):.0f}", f"{c.median('veth_drops'):.0f}",
             f"{c.median('rx_cpu'):.1f}", f"{c.median('tx_cpu'):.1f}", f"{c.median('tx_us_per_frame'):.2f}",
             f"{c.median('would_block'):.0f}")
            for c in cells.values()]
    lines = [f"## afpacket: AfPacketTx -> veth -> AfPacketRx, burst {args.burst}, {args.seconds:g} s after "
             f"{args.warmup:g} s warm-up, median of {args.repeat}", *text_table(header, rows)]
    for size in args.sizes:
        fast = max(args.modes, key=lambda m: cells[(m, size)].median("rx_mpps"))
        cheap = min(args.modes, key=lambda m: cells[(m, size)].median("tx_us_per_frame"))
        lines.append(f"# {size} B: faster Tx mode (rx Mpps) = {fast}, cheaper (sender CPU per frame) = {cheap}")
    errors = sum(r.tx_errors for c in cells.values() for r in c.runs)
    if errors:
        lines.append(f"# !!! the sender counted {errors} frame errors")
    return Section("afpacket", lines, {"cells": [c.to_json() for c in cells.values()], "tx_errors": errors})


# -- Fig. 6: Rx service -> MacSwapper -> Tx service, through the agent ---------------------------
def _macswap_request(name: str, rx: Msg, out: Msg) -> Any:
    models = _import("micronf.api.models")
    return models.DeployRequest.model_validate({
        "name": name, "graph": {"nodes": [{"name": "swap", "type": "MacSwapper"}], "entry": "swap"},
        "rx": rx, "outputs": {"out": {"backend": out}}, "autoscale": {"enabled": False}})


def _graph_window(agent: Any, name: str, seconds: float) -> tuple[float, float, float]:
    """(frames the Rx service read, frames the Tx service sent, graph drops) per second over ``seconds``."""
    s0, t0 = agent.stats(name), time.monotonic()
    time.sleep(seconds)
    s1, t1 = agent.stats(name), time.monotonic()
    dt = t1 - t0
    drops = sum(s1.drops.values()) - sum(s0.drops.values())
    return ((s1.rx["frames"] - s0.rx["frames"]) / dt, (s1.tx["out"]["frames"] - s0.tx["out"]["frames"]) / dt,
            drops / dt)


def _progress(section: str, rep: int, repeat: int, size: int, r: tuple[float, float, float]) -> None:
    print(f"[{section} {rep + 1}/{repeat}] {size} B: rx {r[0] / 1e6:.3f} tx {r[1] / 1e6:.3f} Mpps", file=sys.stderr,
          flush=True)


def _graph_table(title: str, cells: dict[int, list[tuple[float, float, float]]]) -> Section:
    rows, doc = [], []
    for size, runs in cells.items():
        rx = statistics.median(r[0] for r in runs)
        tx = statistics.median(r[1] for r in runs)
        dr = statistics.median(r[2] for r in runs)
        rows.append((str(size), f"{rx / 1e6:.3f}", f"{tx / 1e6:.3f}", f"{tx * size * 8 / 1e9:.2f}", f"{dr:,.0f}"))
        doc.append({"size": size, "rx_pps": rx, "tx_pps": tx, "drops_per_s": dr, "runs": runs})
    header = ("size B", "rx Mpps", "tx Mpps", "tx Gbps", "drops/s")
    return Section(title, [f"## {title}", *text_table(header, rows)], {"cells": doc})


def section_graph(args: argparse.Namespace) -> Section:
    """Generator Rx service (full speed) -> MacSwapper -> null Tx service, per frame size (paper Fig. 6)."""
    agent_mod = _import("micronf.agent.core")
    cells: dict[int, list[tuple[float, float, float]]] = {s: [] for s in args.sizes}
    with agent_mod.Agent() as agent:
        for rep in range(args.repeat):
            for size in args.sizes:
                req = _macswap_request(f"bio-gen-{size}", {"kind": "generator", "sizes": [size], "flows": 64},
                                       {"kind": "null"})
                agent.deploy(req)
                try:
                    time.sleep(args.warmup)
                    cells[size].append(_graph_window(agent, req.name, args.seconds))
                finally:
                    agent.remove(req.name)
                _progress("graph", rep, args.repeat, size, cells[size][-1])
    return _graph_table(f"graph: generator Rx -> MacSwapper -> null Tx (agent services), {args.seconds:g} s "
                        f"windows, median of {args.repeat}", cells)


def section_graph_veth(args: argparse.Namespace) -> Section:
    """AfPacketTx in ns A -> veth -> agent Rx (AF_PACKET, ns B) -> MacSwapper -> Tx (AF_PACKET) -> veth -> ns C."""
    netns = _import("tests.netns")
    agent_mod = _import("micronf.agent.core")
    cpus = sorted(os.sched_getaffinity(0))
    cells: dict[int, list[tuple[float, float, float]]] = {s: [] for s in args.sizes}
    with agent_mod.Agent() as agent, netns.NetLab("biog") as lab:
        ns_a, ns_b, ns_c = lab.netns(3)
        link_in = lab.veth(ns_a, ns_b)
        link_out = lab.veth(ns_b, ns_c)
        for rep in range(args.repeat):
            for size in args.sizes:
                req = _macswap_request(f"bio-veth-{size}", {"kind": "afpacket", "iface": link_in.if_b, "netns": ns_b},
                                       {"kind": "afpacket", "iface": link_out.if_a, "netns": ns_b})
                agent.deploy(req)
                conn, child = _FORK.Pipe()
                proc = _FORK.Process(target=sender, args=(child, {"iface": link_in.if_a, "netns": ns_a}, cpus[0],
                                                          size, args.burst))
                try:
                    proc.start()
                    _recv(conn, 120, "sender")
                    t_start = time.monotonic() + args.warmup
                    conn.send((t_start, t_start + args.seconds + 0.2))
                    time.sleep(args.warmup)
                    cells[size].append(_graph_window(agent, req.name, args.seconds))
                    _recv(conn, args.seconds + 30, "sender")
                finally:
                    proc.join(10)
                    if proc.is_alive():
                        proc.kill()
                    agent.remove(req.name)
                _progress("graph-veth", rep, args.repeat, size, cells[size][-1])
    return _graph_table(f"graph-veth: veth -> agent Rx (AF_PACKET) -> MacSwapper -> Tx (AF_PACKET sendmmsg) -> "
                        f"veth, {args.seconds:g} s windows, median of {args.repeat}", cells)


SECTION_RUNNERS: dict[str, Callable[[argparse.Namespace], Section]] = {
    "afpacket": section_afpacket, "graph": section_graph, "graph-veth": section_graph_veth}


# -- command line ----------------------------------------------------------------------------
def _choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
        return values

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="micronf packet I/O backends")
    ap.add_argument("--only", type=_choices(SECTIONS), default=list(SECTIONS), help="sections (default: all)")
    ap.add_argument("--sizes", type=int_list, default=[64, 128, 256, 512, 1024, 1500],
                    help="frame sizes in bytes, no FCS (default 64,128,256,512,1024,1500)")
    ap.add_argument("--modes", type=_choices(TX_MODES), default=list(TX_MODES), help="AF_PACKET Tx modes")
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per run (default 2)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring (default 0.5)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell, interleaved (default 3)")
    ap.add_argument("--burst", type=int, default=64, help="frames per send call (default 64)")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of the table")
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.seconds <= 0 or args.warmup < 0 or args.burst < 1:
        ap.error("need --repeat >= 1, --seconds > 0, --warmup >= 0, --burst >= 1")
    if max(args.sizes) > MAX_FRAME or min(args.sizes) < 60:
        ap.error(f"frame sizes must be in 60..{MAX_FRAME}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv] if argv is None else ["io.py", *argv])
    if os.geteuid() != 0:
        print("io.py: needs root (network namespaces, AF_PACKET sockets)", file=sys.stderr)
        return 2
    facts = machine_facts()
    start = time.monotonic()
    sections = [SECTION_RUNNERS[name](args) for name in args.only]
    elapsed = time.monotonic() - start
    if args.json:
        doc = {"benchmark": "micronf packet I/O", "command": command, "machine": facts,
               "settings": {k: v for k, v in vars(args).items() if k != "json"}, "elapsed_seconds": elapsed,
               "sections": {s.name: s.doc for s in sections}}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"# machine: {facts['cpu']}, nproc {facts['nproc']}, kernel {facts['kernel']}, python {facts['python']}, "
          f"numba {facts['numba']}, netdev_max_backlog {facts['netdev_max_backlog']}, load average at start "
          f"{' '.join(map(str, facts['loadavg_at_start']))}")
    print(f"# command: {command}; elapsed {elapsed:.0f} s")
    for s in sections:
        print("\n".join(s.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
