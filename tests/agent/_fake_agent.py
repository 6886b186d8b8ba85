"""A fake agent core for the HTTP-layer tests: implements ``micronf.api.protocol.AgentCore`` in memory.

It records every call, and a test makes it fail by putting an exception in ``fail`` (raised by
the next calls of that method) so each error path of the server and client can be driven.
"""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from micronf.api.errors import DeploymentExistsError, DeploymentNotFoundError
from micronf.api.models import (
    Conservation,
    DeploymentInfo,
    DeployRequest,
    EgressStats,
    GraphStats,
    Health,
    IngressStats,
    LatencyStats,
    NodeStatsInfo,
    ProcessInfo,
    RestartEventInfo,
    ScaleEventInfo,
)


def request_body(name: str = "web") -> dict[str, Any]:
    """A valid DeployRequest body: CheckIPHeader -> MacSwapper, one output."""
    return {
        "name": name,
        "graph": {
            "nodes": [{"name": "chk", "type": "CheckIPHeader"}, {"name": "swap", "type": "MacSwapper"}],
            "edges": [{"src": "chk", "label": "out", "dst": "swap"}],
            "entry": "chk",
        },
        "rx": {"kind": "null"},
        "rules": [{"src": "10.0.0.0/8", "proto": "udp", "dport": 53}],
        "outputs": {"out": {"backend": {"kind": "null"}, "next_hop_mac": "02:00:00:00:00:01"}},
    }


def graph_stats(name: str) -> GraphStats:
    """Counters with distinct values everywhere, so a test sees which field went where."""
    chk = NodeStatsInfo(
        name="chk", type="CheckIPHeader", instance_of=None,
        runtime={"rx": 1000, "tx": 990, "dropped": 7, "unconnected": 2, "full": 1, "bad_verdict": 0,
                 "batches": 40, "idle_polls": 5, "cycles": 123456, "yields": 3},
        verdicts={"out": 990, "drop:bad_checksum": 6, "drop:bad_length": 1},
        counters={},
        ingress=[IngressStats(src="rx", ring=0, occupancy=12, capacity=1024)],
        egress=[EgressStats(dst="swap", kind="pp", sent=985, full=3),
                EgressStats(dst="swap#1", kind="pp", sent=2, full=0)],
    )
    swap = NodeStatsInfo(
        name="swap", type="MacSwapper", instance_of=None,
        runtime={"rx": 985, "tx": 985, "batches": 39, "cycles": 65432},
        verdicts={"out": 985}, counters={"swapped": 985},
        ingress=[IngressStats(src="chk", ring=1, occupancy=4, capacity=512)], egress=[],
    )
    swap1 = NodeStatsInfo(
        name="swap#1", type="MacSwapper", instance_of="swap",
        runtime={"rx": 2, "tx": 2}, verdicts={"out": 2}, counters={},
        ingress=[IngressStats(src="chk", ring=2, occupancy=0, capacity=512)], egress=[],
    )
    return GraphStats(
        name=name, at=1.5e9,
        rx={"received": 1010, "accepted": 1000, "unmatched": 10},
        tx={"out": {"sent": 980, "backend_full": 7}},
        drops={"chk.bad_checksum": 6, "chk.bad_length": 1, "rx.unmatched": 10},
        nodes=[chk, swap, swap1],
        pool={"slots": 4096, "free": 4000, "in_use": 96, "allocated": 5000, "alloc_failures": 9},
        latency=LatencyStats(count=980, p50_ns=2000, p90_ns=8000, p99_ns=30000, max_ns=50000,
                             buckets=[(4000.0, 600), (1000.0, 100), (16000.0, 270), (65536.0, 10)]),
        conservation=Conservation(rx=1000, tx=987, dropped=7, in_flight=6, ok=True),
        scale_events=[ScaleEventInfo(at=1.0, node="swap", instance="swap#1", action="out", reason="drops"),
                      ScaleEventInfo(at=2.0, node="swap", instance="swap#2", action="out", reason="drops"),
                      ScaleEventInfo(at=3.0, node="swap", instance="swap#2", action="in", reason="idle")],
        restarts=[RestartEventInfo(at=2.5, process=1, nodes=["swap"], exit_status="signal 9",
                                   reclaimed_buffers=17, downtime_ms=40.0)],
    )


class FakeAgent:
    """In-memory deployments; ``fail[method]`` is raised by calls to ``method`` while it is set
    (``fail_times[method]`` limits how many calls raise it)."""

    def __init__(self, *, agent_id: str | None = None, data_dir: object = None, detached: bool = False,
                 adopt: bool = False) -> None:
        self.id = agent_id  # the keywords the real Agent takes (all but agent_id unused here)
        self.infos: dict[str, DeploymentInfo] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, Exception] = {}
        self.fail_times: dict[str, int] = {}
        self.closed = False
        self._mu = threading.Lock()

    def _enter(self, method: str, arg: str = "") -> None:
        with self._mu:
            self.calls.append((method, arg))
            exc = self.fail.get(method)
            if exc is None:
                return
            left = self.fail_times.get(method)
            if left is not None:
                if left <= 1:
                    del self.fail[method]
                self.fail_times[method] = left - 1
        raise exc

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    def deploy(self, req: DeployRequest) -> DeploymentInfo:
        self._enter("deploy", req.name)
        if req.name in self.infos:
            raise DeploymentExistsError(f"deployment {req.name!r} already exists; remove it first")
        info = DeploymentInfo(
            name=req.name, segment=f"micronf-{req.name}", state="running", created_at=1.0e9,
            entry=req.graph.entry, nodes=[n.name for n in req.graph.nodes], exits=["out"],
            outputs={k: str(v.backend.get("kind")) for k, v in req.outputs.items()},
            processes=[ProcessInfo(index=i, nodes=[n.name], pid=1000 + i, alive=i != 1, cpu=None,
                                   policy="other", restarts=3 * i)
                       for i, n in enumerate(req.graph.nodes)],
        )
        self.infos[req.name] = info
        return info

    def _get(self, name: str) -> DeploymentInfo:
        try:
            return self.infos[name]
        except KeyError:
            raise DeploymentNotFoundError(f"no deployment named {name!r}") from None

    def remove(self, name: str) -> None:
        self._enter("remove", name)
        self._get(name)
        del self.infos[name]

    def deployments(self) -> list[DeploymentInfo]:
        self._enter("deployments")
        return list(self.infos.values())

    def deployment(self, name: str) -> DeploymentInfo:
        self._enter("deployment", name)
        return self._get(name)

    def stats(self, name: str) -> GraphStats:
        self._enter("stats", name)
        return graph_stats(self._get(name).name)

    def health(self) -> Health:
        self._enter("health")
        procs = [p for i in self.infos.values() for p in i.processes]
        return Health(status="ok", version="test", uptime_s=12.5, deployments=len(self.infos),
                      processes=len(procs), processes_alive=sum(p.alive for p in procs))

    def close(self) -> None:
        self.closed = True


# `micronf agent` (the real command, uvicorn, the guard) with this fake in place of the agent core
# (micronf.agent.core, which the command imports): `python -c RUN_FAKE_AGENT agent --port P ...`.
# Its calls and the deployments left at exit go to the JSON file $FAKE_AGENT_LOG.
RUN_FAKE_AGENT = textwrap.dedent("""
    import json, os, sys, types
    from tests.agent._fake_agent import FakeAgent

    class Agent(FakeAgent):
        def close(self):
            with open(os.environ["FAKE_AGENT_LOG"], "w") as f:
                json.dump({"calls": self.calls, "left": list(self.infos)}, f)

    core = types.ModuleType("micronf.agent.core")
    core.Agent = Agent
    sys.modules["micronf.agent.core"] = core
    from micronf.app.cli import main
    sys.argv = ["micronf", *sys.argv[1:]]
    main()
""")


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """A real uvicorn server on a free port of 127.0.0.1, in a thread, serving ``app``; its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        threading.Event().wait(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
