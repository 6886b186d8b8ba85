"""Chaos soak (issue 11 §5): the Fig. 11 SFC under load while its processes are killed at random.

A ``micronf agent`` process (its graphs detached from it, as in production; its own token file
and data directory in a temporary directory) deploys the paper's Fig. 11 SFC (Firewall -> Monitor
-> Application Firewall, optimized and placed for this machine) with the generator as Rx, every
frame stamped with its sequence number, and a ``seqcheck`` sink on every exit. First a short
probe offers far more than the graph takes and measures its capacity (packets accepted per
second); then the soak offers ``--load`` (0.8) of it for ``--minutes``, and every ``--every``
(10-30) seconds ``kill -9``s one of: a µNF process, the Rx service, the Tx service, the graph's
zygote, or the agent itself (a new agent is then started on the same machine and port — the port
is the agent's identity — and must adopt the running graph) — each kind once per round, in
random order.

Per event it reports the kind, the downtime (µNF/Rx/Tx: the supervisor's restart event; agent:
until the new agent lists the graph again, while the traffic's own downtime is checked from the
segment's Tx counter) and the packets lost in the crash (the growth of the ``lost_in_crash``
drops: buffers the dead process held, a dead Rx's unfinished burst). At the end, once the
generator's ``count`` is sent and nothing is in flight: ``in == out + dropped[reason]`` exactly
(``lost_in_crash`` is a reason), what the sinks saw (sequence numbers seen twice — also across
exits —, out of range, unstamped, reordered within a flow; the numbers seen must be the frames
sent out, plus at most those a killed Tx service had written when it died), the private RSS
growth of every process role, and an SVG of the Tx rate over time with the events marked. Exit
status 0 only when the accounting is exact and the sinks saw no number twice.

Usage::

    python bench/soak.py [--minutes 10] [--load 0.8] [--every 10,30] [--kinds unf,rx,tx,zygote,agent]
                         [--seed N] [--json FILE] [--plot FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _common import base_facts, text_table

BENCH_DIR = Path(__file__).resolve().parent
try:
    import micronf  # noqa: F401
except ImportError:  # a checkout without an installed package
    sys.path.insert(0, str(BENCH_DIR.parent / "src"))

from micronf.api.statedir import read_token  # noqa: E402
from micronf.app import run as embedded  # noqa: E402
from micronf.dataplane.segment import Segment  # noqa: E402
from micronf.io.generator_spec import paper_traffic  # noqa: E402
from micronf.io.sequence import read_seqcheck  # noqa: E402
from micronf.orchestrator.placement import Candidate, Traffic, place  # noqa: E402
from micronf.services.iomem import RX_COUNTERS, TX_WORDS  # noqa: E402

NAME = "soak"
KINDS = ("unf", "rx", "tx", "zygote", "agent")
MARK = "MICRONF_SOAK"
SAMPLE_S = 0.5
HTTP_TIMEOUT = 300.0  # a deploy on a busy 2-core machine can take minutes (the agent allows 120 s per start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    """One ``micronf agent`` process; every process it starts carries ``mark`` in its environment.

    Its token file and data directory are in ``home`` (also its state directory, so the soak never
    touches the user's), so a replacement started with the same ``home`` and ``port`` has the same
    token and the same identity (the port) and adopts the graph.
    """

    def __init__(self, mark: str, log: Path, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, MARK: mark, "MICRONF_STATE_DIR": str(home)}
        src = str(BENCH_DIR.parent / "src")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "micronf", "agent", "--port", str(self.port),
                                      "--token-file", str(home / "token"), "--data-dir", str(self.data_dir),
                                      "--log-level", "warning"], env=env, stdout=log.open("a"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not come up (see {log})")
            time.sleep(0.1)
        self.headers = {"Authorization": f"Bearer {read_token(home / 'token')}"}

    @property
    def data_dir(self) -> Path:
        """The agent's data directory: the sinks' state files are there."""
        return self.home / "data"

    def call(self, method: str, path: str, body: object = None) -> Any:
        reply = httpx.request(method, f"{self.url}{path}", json=body, headers=self.headers, timeout=HTTP_TIMEOUT)
        reply.raise_for_status()
        return reply.json() if reply.content else None


class Counters:
    """The graph's Rx/Tx counters, read straight from its segment (no agent needed)."""

    def __init__(self, segment: str) -> None:
        self.seg = Segment.attach(segment)
        self.rx = self.seg.view("rx.stats", np.int64)
        self.tx = self.seg.view("tx.stats", np.int64).reshape(-1, TX_WORDS)

    def read(self) -> tuple[int, int]:
        """(frames the Rx service accepted, frames the Tx service sent)."""
        return int(self.rx[RX_COUNTERS.index("accepted")]), int(self.tx[:, 0].sum())


def marked(mark: str) -> dict[int, str]:
    """Live processes carrying the soak's marker: pid -> command line."""
    found = {}
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
            if stat[stat.rfind(")") + 2] in "ZX":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


def rss_kb(pid: int) -> int:
    """Private resident memory of ``pid`` (RssAnon: the graph's shared segment, which every process
    maps and touches over time, is not counted)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def request(rate: float, count: int | None) -> dict[str, Any]:
    """The Fig. 11 deploy request, placed as ``micronf run`` places it on this machine, its frames
    stamped with sequence numbers and, given a ``count``, a ``seqcheck`` sink on every exit (state
    file ``<exit>.seq`` in the agent's data directory; else the placement's null outputs)."""
    comp, _ = embedded.load(None)
    traffic = paper_traffic(count=count, rate_pps=rate, sequence=True)
    parts = place(comp.after, NAME, [Candidate(embedded.LOCAL_AGENT, 0)], Traffic(rx=traffic.model_dump(mode="json")))
    body: dict[str, Any] = parts[0].request.model_copy(update={"ring_capacity": 4096}).model_dump(mode="json")
    body["autoscale"] = {"enabled": False}  # the soak measures faults, not scaling decisions
    if count:
        body["outputs"] = {x: {**o, "backend": {"kind": "seqcheck", "path": f"{x}.seq", "capacity": count}}
                           for x, o in body["outputs"].items()}
    return body


def sinks(agent: AgentProcess, body: dict[str, Any]) -> list[Path]:
    """The state files of the request's ``seqcheck`` outputs."""
    return [agent.data_dir / o["backend"]["path"] for o in body["outputs"].values()]


def lost_in_crash(agent: AgentProcess) -> int:
    """The graph's ``lost_in_crash`` drops so far, over every process."""
    drops = agent.call("GET", f"/v1/deployments/{NAME}/stats")["drops"]
    return sum(int(v) for k, v in drops.items() if k.endswith("lost_in_crash"))


def _role(nodes: list[str]) -> str:
    """A process's name: its µNF (or '@rx', '@tx'), or the first of a fused cluster and how many more."""
    return nodes[0] if len(nodes) == 1 else f"{nodes[0]}+{len(nodes) - 1}"


def roles(agent: AgentProcess, mark: str) -> dict[str, int]:
    """Each process role ('agent', 'zygote', '@rx', '@tx', µNF names) -> its pid now."""
    info = agent.call("GET", f"/v1/deployments/{NAME}")
    out = {_role(p["nodes"]): int(p["pid"]) for p in info["processes"] if p["alive"]}
    out["agent"] = agent.proc.pid
    graph = set(out.values())
    for pid, cmd in marked(mark).items():
        if pid not in graph and "micronf.runtime.zygote" in cmd:
            out["zygote"] = pid
    return out


def measure_capacity(agent: AgentProcess, seconds: float) -> float:
    """Packets per second the graph accepts when offered far more than it takes: the median of the
    1-second windows of ``seconds`` (a busy shared machine stalls the graph for seconds now and
    then: an average over a stall offered 1% of the capacity, the best window twice what the graph
    keeps up)."""
    info = agent.call("POST", "/v1/deployments", request(rate=5_000_000.0, count=None))
    counters = Counters(info["segment"])
    time.sleep(1.0)
    readings = [(counters.read()[0], time.monotonic())]
    while readings[-1][1] - readings[0][1] < seconds:
        time.sleep(1.0)
        readings.append((counters.read()[0], time.monotonic()))
    agent.call("DELETE", f"/v1/deployments/{NAME}")
    counters.seg.close()
    return float(np.median([(a1 - a0) / (t1 - t0) for (a0, t0), (a1, t1) in itertools.pairwise(readings)]))


def run(minutes: float, load: float, every: tuple[float, float], kinds: list[str], seed: int, probe_s: float,
        log: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    mark = uuid.uuid4().hex
    home = Path(tempfile.mkdtemp(prefix="micronf-soak-"))
    agent = AgentProcess(mark, log, home)
    agents = [agent]
    try:
        capacity = measure_capacity(agent, probe_s)
        rate = load * capacity
        duration = minutes * 60
        count = int(rate * duration)
        body = request(rate=rate, count=count)
        info = agent.call("POST", "/v1/deployments", body)
        counters = Counters(info["segment"])
        samples: list[tuple[float, int, int]] = []
        stop = threading.Event()
        t_start = time.monotonic()

        def sample() -> None:
            while not stop.wait(SAMPLE_S):
                samples.append((time.monotonic() - t_start, *counters.read()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(2.0)
        rss0 = {role: rss_kb(pid) for role, pid in roles(agent, mark).items()}
        events: list[dict[str, Any]] = []
        rounds: list[str] = []  # each kind once per round, in random order
        next_at = rng.uniform(*every)
        while time.monotonic() - t_start + 5 < duration:
            if time.monotonic() - t_start < next_at:
                time.sleep(0.1)
                continue
            rounds = rounds or rng.sample(kinds, len(kinds))
            kind = rounds.pop()
            t_kill = time.monotonic() - t_start
            event = chaos(kind, agent, mark, counters, rng, log)
            event["t"] = t_kill
            events.append(event)
            if kind == "agent":
                agent = event.pop("new_agent")
                agents.append(agent)
            print(f"  t={event['t']:6.1f} s  {kind:6s} {event['what']}: downtime {event['downtime_ms']:.0f} ms, "
                  f"lost {event['lost']}", flush=True)
            next_at = time.monotonic() - t_start + rng.uniform(*every)
        final = drain(agent, count)
        sink = read_seqcheck(*sinks(agent, body))
        rss1 = {role: rss_kb(pid) for role, pid in roles(agent, mark).items()}
        stop.set()
        sampler.join()
        agent.call("DELETE", f"/v1/deployments/{NAME}")
        counters.seg.close()
        return report(capacity, rate, count, duration, events, final, sink, samples, rss0, rss1, seed)
    finally:
        for a in agents:
            if a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
                a.proc.wait(timeout=60)
        for pid in marked(mark):  # nothing may be left behind; report it if something was
            print(f"warning: pid {pid} left running; killed", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def chaos(kind: str, agent: AgentProcess, mark: str, counters: Counters, rng: random.Random,
          log: Path) -> dict[str, Any]:
    """``kill -9`` one process of ``kind`` and measure what it cost."""
    now = roles(agent, mark)
    if kind == "agent":
        tx0 = counters.read()[1]
        t0 = time.monotonic()
        agent.proc.kill()
        agent.proc.wait()
        time.sleep(2.0)  # long enough to see traffic go on through the stalls of a busy 2-core machine
        tx_gap = counters.read()[1] - tx0  # forwarded while no agent ran
        new = AgentProcess(mark, log, agent.home, agent.port)
        listed = [d["name"] for d in new.call("GET", "/v1/deployments")]
        if listed != [NAME]:
            raise RuntimeError(f"the new agent did not adopt the graph (lists {listed})")
        return {"kind": kind, "what": f"agent pid {agent.proc.pid}", "lost": 0,
                "downtime_ms": 0.0 if tx_gap > 0 else float("nan"), "new_agent": new,
                "control_plane_ms": (time.monotonic() - t0) * 1e3, "forwarded_without_agent": tx_gap}
    if kind == "zygote":
        pid = now.get("zygote")
        if pid is None:  # none running (it exited and no restart needed one since): nothing to kill
            return {"kind": kind, "what": "no zygote running", "lost": 0, "downtime_ms": 0.0}
        tx0 = counters.read()[1]
        os.kill(pid, signal.SIGKILL)
        time.sleep(1.0)
        moved = counters.read()[1] - tx0
        return {"kind": kind, "what": f"zygote pid {pid}", "lost": 0, "downtime_ms": 0.0 if moved else float("nan")}
    role = rng.choice([r for r in now if r not in ("agent", "zygote", "@rx", "@tx")]) if kind == "unf" else f"@{kind}"
    before = len(agent.call("GET", f"/v1/deployments/{NAME}/stats")["restarts"])
    lost0 = lost_in_crash(agent)
    os.kill(now[role], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        restarts = agent.call("GET", f"/v1/deployments/{NAME}/stats")["restarts"]
        if len(restarts) > before:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{role} was not restarted within 60 s")
        time.sleep(0.05)
    ev = restarts[-1]
    time.sleep(1.0)  # a restarted Rx settles its predecessor's unfinished burst before its first frame
    return {"kind": kind, "what": f"{role} pid {now[role]}", "lost": lost_in_crash(agent) - lost0,
            "reclaimed_buffers": int(ev["reclaimed_buffers"]), "downtime_ms": float(ev["downtime_ms"])}


def drain(agent: AgentProcess, count: int, timeout: float = 120.0) -> dict[str, Any]:
    """The final stats once the source is done and the graph quiet: the Rx service produced at
    least ``count`` frames, nothing is in flight and nothing moved for a second (else, after
    ``timeout``, the last reading: a restarted Rx that replays its source is still sending)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        s: dict[str, Any] = agent.call("GET", f"/v1/deployments/{NAME}/stats")
        quiet = (last is not None and s["rx"]["frames"] == last["rx"]["frames"]
                 and s["conservation"]["tx"] == last["conservation"]["tx"])
        if s["rx"]["frames"] >= count and s["conservation"]["in_flight"] == 0 and quiet:
            return s
        if time.monotonic() > deadline:
            return s
        last = s
        time.sleep(1.0)


def report(capacity: float, rate: float, count: int, duration: float, events: list[dict[str, Any]],
           final: dict[str, Any], sink: dict[str, int], samples: list[tuple[float, int, int]],
           rss0: dict[str, int], rss1: dict[str, int], seed: int) -> dict[str, Any]:
    frames = int(final["rx"]["frames"])
    out = sum(int(t["frames"]) for t in final["tx"].values())
    dropped = {k: int(v) for k, v in sorted(final["drops"].items())}
    lost = sum(v for k, v in dropped.items() if k.endswith("lost_in_crash"))
    rates = [(t1, (x1 - x0) / (t1 - t0)) for (t0, _, x0), (t1, _, x1) in itertools.pairwise(samples)]
    return {
        "facts": base_facts(), "seed": seed, "capacity_pps": capacity, "offered_pps": rate, "count": count,
        "seconds": duration, "events": events,
        "packets_in": frames, "packets_out": out, "dropped": dropped, "lost_in_crash": lost,
        "in_flight": int(final["conservation"]["in_flight"]),
        "balanced": frames == out + sum(dropped.values()) + int(final["conservation"]["in_flight"]),
        "drained": final["conservation"]["in_flight"] == 0 and frames >= count,
        "generated_beyond_count": frames - count,
        "sink": sink,
        "duplicates": sink["duplicates"],
        # what the sinks recorded is what went out, plus at most the frames a killed Tx wrote as it died
        "sink_consistent": (out <= sink["distinct"] <= out + lost and sink["out_of_range"] == 0
                            and sink["unstamped"] == 0),
        "rss_kb": {role: {"start": rss0.get(role, 0), "end": rss1.get(role, 0)} for role in sorted({*rss0, *rss1})},
        "rate": rates,
        "rx_rate": [(t1, (a1 - a0) / (t1 - t0)) for (t0, a0, _), (t1, a1, _) in itertools.pairwise(samples)],
    }


def plot_svg(r: dict[str, Any], path: Path) -> None:
    """Tx rate over time with every kill marked (a self-contained SVG)."""
    rows = r["rate"] or [(0.0, 0.0)]
    w, h, pad = 900, 340, 50
    t_max = float(max(r["seconds"], max(t for t, _ in rows), 1.0))
    y_max = float(max([v for _, v in rows] + [r["offered_pps"], 1.0])) * 1.15

    def x(t: float) -> float:
        return pad + (w - 2 * pad) * t / t_max

    def y(v: float) -> float:
        return h - pad - (h - 2 * pad) * v / y_max

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="11"><rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#444"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#444"/>',
           f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">time (s), 0 - {t_max:.0f}</text>',
           f'<text x="12" y="{pad - 20}">Tx packets/s (max {y_max:,.0f}); offered {r["offered_pps"]:,.0f} '
           f'(dashed)</text>',
           f'<line x1="{pad}" y1="{y(r["offered_pps"]):.1f}" x2="{w - pad}" y2="{y(r["offered_pps"]):.1f}" '
           f'stroke="#999" stroke-dasharray="2"/>']
    colors = {"unf": "#1f77b4", "rx": "#2ca02c", "tx": "#9467bd", "zygote": "#8c564b", "agent": "#d62728"}
    for ev in r["events"]:
        xe = x(ev["t"])
        out.append(f'<line x1="{xe:.1f}" y1="{pad}" x2="{xe:.1f}" y2="{h - pad}" stroke="{colors[ev["kind"]]}" '
                   f'stroke-dasharray="4"/>')
        out.append(f'<text x="{xe:.1f}" y="{pad - 4}" text-anchor="middle" fill="{colors[ev["kind"]]}">'
                   f'{ev["kind"]}</text>')
    pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in rows)
    out.append(f'<polyline fill="none" stroke="#000" stroke-width="1.2" points="{pts}"/>')
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def print_report(r: dict[str, Any]) -> None:
    print(f"\n## soak: Fig. 11 at {r['offered_pps']:,.0f} pps ({r['offered_pps'] / r['capacity_pps']:.0%} of the "
          f"measured {r['capacity_pps']:,.0f}), {r['seconds']:.0f} s, seed {r['seed']}")
    rows = [[f"{e['t']:.1f}", e["kind"], e["what"], f"{e['downtime_ms']:.0f}", str(e["lost"]),
             f"{e.get('control_plane_ms', 0):.0f}" if e["kind"] == "agent" else "-"] for e in r["events"]]
    print("\n".join(text_table(["t (s)", "kill -9", "process", "downtime ms", "lost", "agent back ms"], rows)))
    dropped = sum(r["dropped"].values())
    print(f"\nin {r['packets_in']:,} == out {r['packets_out']:,} + dropped {dropped:,} "
          f"(of which lost_in_crash {r['lost_in_crash']:,}) + in flight {r['in_flight']:,}: "
          f"{'exact' if r['balanced'] else 'VIOLATED'}"
          + ("" if r["drained"] else " (read while packets still moved: the source had not stopped)"))
    for k, v in r["dropped"].items():
        print(f"  dropped {k}: {v:,}")
    print(f"generated beyond the count: {r['generated_beyond_count']:,}")
    s = r["sink"]
    print(f"sinks: {s['frames']:,} frames, {s['distinct']:,} distinct sequence numbers, duplicates "
          f"{s['duplicates']:,}, out of range {s['out_of_range']:,}, unstamped {s['unstamped']:,}, reordered within "
          f"a flow {s['reordered']:,}; never sent: {r['count'] - s['distinct']:,} "
          f"({'consistent with out and lost_in_crash' if r['sink_consistent'] else 'INCONSISTENT'})")
    rss = [[role, f"{v['start']:,}", f"{v['end']:,}", f"{v['end'] - v['start']:+,}"] for role, v in r["rss_kb"].items()]
    print("\n".join(text_table(["process", "private RSS start kB", "end kB", "growth kB"], rss)))
    print("(a role whose process was killed is a new process at the end)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    ap.add_argument("--load", type=float, default=0.8, help="offered load as a fraction of the measured capacity")
    ap.add_argument("--every", default="10,30", help="seconds between kills: MIN,MAX (default 10,30)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="what to kill, each once per round in random "
                    f"order (default {','.join(KINDS)})")
    ap.add_argument("--probe", type=float, default=4.0, help="seconds of the capacity probe")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    ap.add_argument("--plot", type=Path, default=BENCH_DIR / "out" / "soak.svg", help="the SVG of rate over time")
    ap.add_argument("--log", type=Path, default=BENCH_DIR / "out" / "soak-agent.log", help="the agents' log")
    args = ap.parse_args()
    lo, hi = (float(v) for v in args.every.split(","))
    seed = args.seed if args.seed is not None else time.time_ns() % 1_000_000
    args.log.parent.mkdir(parents=True, exist_ok=True)
    kinds = args.kinds.split(",")
    if not kinds or set(kinds) - set(KINDS):
        ap.error(f"--kinds: choose from {', '.join(KINDS)}")
    r = run(args.minutes, args.load, (lo, hi), kinds, seed, args.probe, args.log)
    print_report(r)
    plot_svg(r, args.plot)
    print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2, default=str))
    ok = r["balanced"] and r["drained"] and r["generated_beyond_count"] == 0
    sys.exit(0 if ok and r["duplicates"] == 0 and r["sink_consistent"] else 1)


if __name__ == "__main__":
    main()
