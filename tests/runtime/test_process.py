"""The µNF process: drops at a full egress are counted (never blocking), SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from micronf.runtime.graph import chain_spec, plan
from micronf.runtime.launch import GraphRuntime
from tests.graphio import pump


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_full_egress_drops_are_counted_and_conservation_holds() -> None:
    """A slow µNF behind a fast one: the fast one's egress fills up and drops, with the reason
    'full' on that egress; every packet is either out or counted."""
    spec = chain_spec([("MacSwapper", {}), ("BusyLoop", {"cycles": 200_000})], burst=64)
    layout = plan(spec, capture_drops=True, on_full="drop")
    total = 20_000
    with GraphRuntime(layout, ring_capacity=64) as g:
        out = pump(g, [bytes(Ether() / IP() / UDP(sport=i)) for i in range(total)], timeout=300)
        head = g.node_stats("MacSwapper")
        full = sum(g.node_stats(n.name).runtime["full"] for n in layout.nodes)
        inside = g.freed_inside()
        assert g.mem is not None
        in_flight = g.mem.pool.stats().in_use
    assert head.runtime["full"] > 0  # the ring to BusyLoop overflowed ...
    assert full == inside  # ... and full egresses are the only place packets were lost, all counted
    assert total == len(out["out"]) + inside + in_flight
    assert head.runtime["rx"] == head.runtime["tx"] + head.runtime["full"]  # per-µNF conservation


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_stops_a_unf_cleanly() -> None:
    layout = plan(chain_spec([("MacSwapper", {}), ("MacSwapper", {})]))
    with GraphRuntime(layout) as g:
        assert g.mem is not None
        pid = g.pids()[1]
        os.kill(pid, signal.SIGTERM)
        assert g.procs[1].wait(timeout=30) == 0
        assert not g.line(1).ready  # it said goodbye
        assert g.procs[0].poll() is None  # the other µNF is untouched
        time.sleep(0.1)
