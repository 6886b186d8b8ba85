"""The free hand-off between fused µNFs (``loop.pass_local``): a batch whose verdicts are all the label
routed to the next fused µNF skips the routing step, and every counter stays exactly what the
per-packet routing (``loop.route_batch``) counts.

The fused process runs in this test process over a real graph segment (pool, rings, counters in
shared memory): one ``UnfStage.step`` of one iteration takes exactly one batch, so each test
decides what every batch holds. Expected counters and output frames are computed in plain Python
and scapy from the input; the same batches are also run with the hand-off switched off (every
batch through ``route_batch``, the routing as it was) and every counter must be equal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from micronf.runtime.graph import EdgeSpec, GraphLayout, GraphSpec, NodeSpec, chain_spec, plan
from micronf.runtime.launch import GraphRuntime
from micronf.runtime.loop import (
    RC_BAD_VERDICT,
    RC_BATCHES,
    RC_CYCLES,
    RC_DROPPED,
    RC_EG_FULL0,
    RC_EG_SENT0,
    RC_FULL,
    RC_IDLE,
    RC_IDLE_RUN,
    RC_RX,
    RC_TX,
    RC_UNCONNECTED,
    RC_VERDICT0,
    RC_WORDS,
    RC_YIELDS,
)
from micronf.runtime.stage import GraphMemory
from micronf.runtime.unf import UnfStage

CHAIN = [("IPTtlDecrementer", {}), ("IPTtlDecrementer", {}), ("MacSwapper", {})]
BURST = 64


def _ipv4(i: int, ttl: int) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                 IP(src=f"10.0.{i % 200}.1", dst="192.168.1.1", ttl=ttl) / UDP(sport=1000 + i, dport=53) / bytes(18))


def _arp(i: int) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:03", dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=f"10.1.0.{i % 250}"))


@dataclass
class Outcome:
    rc: dict[str, np.ndarray]  # every runtime counter word per node
    exits: dict[str, list[bytes]]
    in_use: int  # pool buffers still held after the exits were drained


@contextmanager
def _fused(layout: GraphLayout, ring_capacity: int = 1024) -> Iterator[tuple[GraphMemory, UnfStage]]:
    """The layout's one fused process, run in this process over a fresh segment."""
    g = GraphRuntime(layout, unprivileged=False, ring_capacity=ring_capacity)
    mem = g.create()
    try:
        yield mem, UnfStage(mem, g.line(0), 0, iters=1)
    finally:
        g.close()


def _run(layout: GraphLayout, batches: Sequence[Sequence[bytes]], *, hand_off: bool,
         ring_capacity: int = 1024) -> Outcome:
    """Feed each batch whole, one stage step per batch; drain the exits. ``hand_off=False`` clears
    every stage's local column, so every batch takes the per-packet routing."""
    with _fused(layout, ring_capacity) as (mem, stage):
        if not hand_off:
            stage.stages = [s._replace(local_col=np.full_like(s.local_col, -1)) for s in stage.stages]
        entry = mem.rings[layout.entry_ring]
        for batch in batches:
            assert len(batch) <= BURST
            hs = mem.pool.alloc(len(batch))
            for h, frame in zip(hs, batch, strict=True):
                mem.pool.write_frame(int(h), frame)
            assert entry.enqueue(hs) == len(batch)
            assert stage.step() == len(batch)
            assert len(entry) == 0  # one batch per step: the test decides what a batch holds
        exits: dict[str, list[bytes]] = {}
        for e in layout.exits:
            hs = mem.rings[e.ring].dequeue(4096)
            exits[e.name] = [mem.pool.read_frame(int(h)) for h in hs]
            mem.pool.free(hs)
        rc = {n.name: mem.runtime_counters(n).copy() for n in layout.nodes}
        return Outcome(rc, exits, mem.pool.stats().in_use)


def _walk(frame: bytes, ttl_stages: int) -> tuple[list[str], bytes]:
    """Plain Python over one input frame: the verdict at each node it reaches and the frame it leaves
    with, for ``ttl_stages`` TTL decrementers then a MAC swapper."""
    pkt = Ether(frame)
    verdicts: list[str] = []
    for _ in range(ttl_stages):
        if IP not in pkt:
            return [*verdicts, "drop:not_ipv4"], bytes(pkt)
        if pkt[IP].ttl <= 1:
            return [*verdicts, "expired"], bytes(pkt)
        pkt[IP].ttl -= 1
        del pkt[IP].chksum
        pkt = Ether(bytes(pkt))
        verdicts.append("out")
    pkt = Ether(src=pkt.dst, dst=pkt.src, type=pkt.type) / pkt.payload
    return [*verdicts, "out"], bytes(pkt)


def _expected_counters(layout: GraphLayout, batches: Sequence[Sequence[bytes]]) -> dict[str, Counter[str]]:
    """Per node, what route_batch counts: rx, tx, dropped, batches, per verdict, per egress sent."""
    names = [n.name for n in layout.nodes]
    want: dict[str, Counter[str]] = {n: Counter() for n in names}
    for batch in batches:
        reached: set[str] = set()
        for frame in batch:
            verdicts, _ = _walk(frame, len(names) - 1)
            for node_name, v in zip(names, verdicts, strict=False):
                node = layout.node(node_name)
                c = want[node_name]
                reached.add(node_name)
                c["rx"] += 1
                c[v] += 1
                if v.startswith("drop:"):
                    c["dropped"] += 1
                else:
                    c["tx"] += 1
                    e = next(r[2] for r in node.routes if r[1] == node.labels.index(v))
                    c[f"eg{e}"] += 1
        for node_name in reached:
            want[node_name]["batches"] += 1
    return want


def _counted(layout: GraphLayout, rc: dict[str, np.ndarray]) -> dict[str, Counter[str]]:
    """The runtime counters of each node in the form of :func:`_expected_counters` (zeros left out)."""
    got: dict[str, Counter[str]] = {}
    for node in layout.nodes:
        r = rc[node.name]
        columns = [*node.labels, *(f"drop:{d}" for d in node.drop_reasons)]
        c: Counter[str] = Counter({"rx": int(r[RC_RX]), "tx": int(r[RC_TX]), "dropped": int(r[RC_DROPPED]),
                                   "batches": int(r[RC_BATCHES])})
        c.update({name: int(r[RC_VERDICT0 + k]) for k, name in enumerate(columns)})
        c.update({f"eg{e}": int(r[RC_EG_SENT0 + e]) for e in range(len(node.egress))})
        for word in (RC_UNCONNECTED, RC_FULL, RC_BAD_VERDICT):
            assert r[word] == 0, (node.name, word)
        got[node.name] = +c  # drop zero entries
    return got


def _same_as_per_packet_routing(layout: GraphLayout, batches: Sequence[Sequence[bytes]]) -> Outcome:
    """Run ``batches`` with and without the hand-off; check counters and conservation; return the run."""
    fast = _run(layout, batches, hand_off=True)
    slow = _run(layout, batches, hand_off=False)
    counters_only = np.ones(RC_WORDS, dtype=bool)
    counters_only[[RC_IDLE, RC_CYCLES, RC_YIELDS, RC_IDLE_RUN]] = False  # time and idling, not packets
    for node in layout.nodes:
        assert np.array_equal(fast.rc[node.name][counters_only], slow.rc[node.name][counters_only]), node.name
    assert fast.exits == slow.exits
    want = {n: +c for n, c in _expected_counters(layout, batches).items()}
    assert _counted(layout, fast.rc) == want
    fed = sum(len(b) for b in batches)
    out = sum(len(v) for v in fast.exits.values())
    dropped = sum(int(r[RC_DROPPED]) for r in fast.rc.values())
    assert fed == out + dropped and fast.in_use == 0  # conservation: every packet out or dropped, no buffer held
    for node in layout.nodes:
        r = fast.rc[node.name]
        assert r[RC_RX] == r[RC_TX] + r[RC_DROPPED] + r[RC_UNCONNECTED] + r[RC_FULL] + r[RC_BAD_VERDICT]
        assert not r[RC_EG_FULL0:RC_EG_FULL0 + len(node.egress)].any()
    return fast


def _exits_by_walk(layout: GraphLayout, batches: Sequence[Sequence[bytes]]) -> dict[str, list[bytes]]:
    """Each exit's frames in order, computed with scapy."""
    names = [n.name for n in layout.nodes]
    exits: dict[str, list[bytes]] = {e.name: [] for e in layout.exits}
    for frame in (f for b in batches for f in b):
        verdicts, out = _walk(frame, len(names) - 1)
        node, v = names[len(verdicts) - 1], verdicts[-1]
        if not v.startswith("drop:"):
            exits["out" if node == names[-1] else f"{node}.{v}"].append(out)
    return exits


@pytest.mark.timeout(300)
def test_all_forward_batches_pass_on_whole_with_exact_counters() -> None:
    """Every verdict is the label to the next fused µNF, at both hand-offs (the second to a node of
    another type): full batches and a short one."""
    layout = plan(chain_spec(CHAIN, cluster="all", burst=BURST))
    batches = [[_ipv4(b * BURST + i, 64) for i in range(BURST)] for b in range(3)] + [[_ipv4(i, 9) for i in range(17)]]
    got = _same_as_per_packet_routing(layout, batches)
    assert got.exits == _exits_by_walk(layout, batches)
    assert len(got.exits["out"]) == 3 * BURST + 17


@pytest.mark.timeout(300)
def test_mixed_batches_take_the_per_packet_routing_with_exact_counters() -> None:
    """Drops, the other label, and a batch passed on whole at the first hand-off that then expires
    entirely at the second µNF (routed from the array the first stage passed on)."""
    layout = plan(chain_spec(CHAIN, cluster="all", burst=BURST))
    mixed = [_arp(i) if i % 7 == 0 else _ipv4(i, 1 + i % 4) for i in range(BURST)]  # ttl 1..4, some ARP
    expire_second = [_ipv4(i, 2) for i in range(BURST)]
    forward = [_ipv4(i, 30) for i in range(BURST)]
    batches = [mixed, expire_second, forward, mixed[:40]]
    got = _same_as_per_packet_routing(layout, batches)
    assert got.exits == _exits_by_walk(layout, batches)
    arp = len([f for f in mixed + mixed[:40] if IP not in Ether(f)])
    assert arp == 16 and sum(int(r[RC_DROPPED]) for r in got.rc.values()) == arp


@pytest.mark.timeout(300)
def test_hand_off_by_a_second_label_to_a_node_of_another_type() -> None:
    """The label to the next fused µNF need not be the first one: IPTtlDecrementer's ``expired`` (column
    1) feeds a fused MacSwapper, ``out`` is an exit."""
    spec = GraphSpec(nodes=[NodeSpec(name="ttl", type="IPTtlDecrementer", cluster="c"),
                            NodeSpec(name="swap", type="MacSwapper", cluster="c")],
                     edges=[EdgeSpec(src="ttl", label="expired", dst="swap")], entry="ttl", burst=BURST)
    layout = plan(spec)
    with _fused(layout) as (_, stage):
        assert [s.local_col.tolist() for s in stage.stages] == [[1], [-1]]
    expired = [_ipv4(i, i % 2) for i in range(BURST)]  # TTL 0 and 1: all expire
    batches = [expired, [_ipv4(i, 5 if i % 3 else 1) for i in range(BURST)]]
    fast = _run(layout, batches, hand_off=True)
    slow = _run(layout, batches, hand_off=False)
    for name in ("ttl", "swap"):
        assert np.array_equal(fast.rc[name][:RC_IDLE], slow.rc[name][:RC_IDLE])  # rx, tx, drops, batches ...
        assert np.array_equal(fast.rc[name][RC_VERDICT0:], slow.rc[name][RC_VERDICT0:])  # per verdict, per egress
    assert fast.exits == slow.exits
    n_expired = BURST + len([i for i in range(BURST) if i % 3 == 0])
    swapped = [bytes(Ether(src=Ether(f).dst, dst=Ether(f).src) / Ether(f).payload)
               for f in expired + [f for f in batches[1] if Ether(f)[IP].ttl <= 1]]
    assert fast.exits["out"] == swapped and len(swapped) == n_expired
    ttl, swap = fast.rc["ttl"], fast.rc["swap"]
    assert ttl[RC_VERDICT0 + 1] == n_expired and ttl[RC_VERDICT0] == 2 * BURST - n_expired
    assert ttl[RC_EG_SENT0 + 0] == n_expired  # egress 0: the in-process hand-off to swap
    assert swap[RC_RX] == swap[RC_TX] == n_expired and swap[RC_BATCHES] == 2
    assert fast.in_use == 0


@pytest.mark.timeout(300)
def test_a_whole_batch_its_exit_ring_cannot_take_is_freed_and_counted_full() -> None:
    """The last µNF sends a one-label batch from where it is; what the exit ring refuses (drop
    policy) is freed and counted per egress, as the per-packet routing counts it."""
    layout = plan(chain_spec(CHAIN, cluster="all", burst=BURST), on_full="drop")
    batches = [[_ipv4(b * BURST + i, 64) for i in range(BURST)] for b in range(3)]
    got = _run(layout, batches, hand_off=True, ring_capacity=BURST)  # the exits are drained only at the end
    swap = got.rc["MacSwapper"]
    assert len(got.exits["out"]) == BURST and got.exits["out"] == _exits_by_walk(layout, batches)["out"][:BURST]
    assert swap[RC_RX] == 3 * BURST and swap[RC_TX] == BURST and swap[RC_FULL] == 2 * BURST
    assert swap[RC_EG_SENT0] == BURST and swap[RC_EG_FULL0] == 2 * BURST and swap[RC_VERDICT0] == 3 * BURST
    assert got.in_use == 0  # the refused buffers went back to the pool
