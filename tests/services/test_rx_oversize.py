"""Frames longer than the graph's frame capacity: dropped whole at Rx and counted as ``oversize``.

Before, the Rx service cut such frames to the slot (1920 bytes) and forwarded them cut. The Rx
kernel is tested on its own with frames of every interesting length around the capacity (and a
frame a backend marks as cut, negative length); then a real agent deployment with a jumbo
capacity takes 9000-byte frames whole and reports the longer ones as a drop and a metric.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from micronf.agent.core import Agent
from micronf.agent.metrics import AgentCollector
from micronf.api.models import DeployRequest
from micronf.dataplane.pool import M_HASH, PacketPool
from micronf.dataplane.ring import RingTable, ring_dequeue
from micronf.dataplane.segment import PrivateMemory
from micronf.io.pcap_read import read_pcap
from micronf.io.pcap_write import PcapWriter
from micronf.io.shard import flow_hashes
from micronf.io.trace import Trace
from micronf.services.classify import compile_rules
from micronf.services.iomem import J_WORDS, RX_INDEX
from micronf.services.rx import rx_burst
from tests.shards import multi_flow_frames, ref_frame_hash

pytestmark = pytest.mark.timeout(300)


def _frame(n: int, seq: int) -> bytes:
    """An ``n``-byte Ethernet/IPv4/UDP frame (built by scapy) whose payload says which one it is."""
    head = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(
        sport=1000 + seq, dport=53)
    pay = bytes([seq]) * (n - len(head))
    return bytes(Ether(bytes(head / Raw(pay))))


@pytest.mark.parametrize("capacity", [1522, 9216])
def test_rx_burst_drops_oversize_frames_whole(capacity: int) -> None:
    lengths = [60, 1514, 1522, 1523, 2000, 9000, 9216, 9217, 65535]
    frames = [_frame(n, i) for i, n in enumerate(lengths)]
    trace = Trace.from_frames(frames)
    cut = -70000  # a frame the backend could only hold cut (AF_PACKET marks it so)
    length = np.append(trace.lengths, np.int32(cut))
    off = np.append(trace.offsets, np.int64(0))
    n = len(length)
    pool = PacketPool.local(64, capacity)
    mem = PrivateMemory(RingTable.regions("rings", 1, 64))
    rings = RingTable.format(mem, "rings", 1, 64)
    entries = np.array([1, 0], np.int64)
    stats = np.zeros(64, np.int64)
    scratch = [np.empty(n, np.uint32) for _ in range(3)]
    journal = np.zeros(J_WORDS, np.int64)
    sent = rx_burst(pool.arrays, rings.ctrl, rings.slots, entries, journal, trace.data, off, length, n,
                    np.zeros(0, np.uint32), compile_rules([]), 0, stats, *scratch)
    fits = [f for f in frames if len(f) <= capacity]
    assert sent == stats[RX_INDEX["accepted"]] == len(fits)
    assert stats[RX_INDEX["oversize"]] == n - len(fits)
    assert stats[RX_INDEX["frames"]] == n == stats[RX_INDEX["accepted"]] + stats[RX_INDEX["oversize"]]
    assert stats[RX_INDEX["bytes"]] == sum(map(len, frames)) - cut
    got = np.empty(64, np.uint32)
    k = ring_dequeue(rings.ctrl[0], rings.slots[0], got, 64)
    assert [pool.read_frame(int(h)) for h in got[:k]] == fits  # whole, in order
    assert pool.stats().in_use == len(fits)  # the oversize frames' buffers went back to the pool


def _scrape(agent: Agent) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    text = prometheus_client.generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.mark.slow
def test_jumbo_deployment_forwards_jumbo_frames_and_counts_longer_ones(tmp_path: Path) -> None:
    lengths = [60, 1500, 1523, 4000, 9000, 9216, 9217, 20000, 64]
    frames = [_frame(n, i) for i, n in enumerate(lengths)]
    src = tmp_path / "in.pcap"
    with PcapWriter(src) as w:
        w.write_frames(frames)
    req = DeployRequest.model_validate({
        "name": "jumbo", "frame_capacity": 9216, "rx": {"kind": "pcap", "path": "in.pcap"},
        "graph": {"nodes": [{"name": "swap", "type": "MacSwapper"}], "edges": [], "entry": "swap"},
        "outputs": {"out": {"backend": {"kind": "pcap", "path": "out.pcap"}}}})
    with Agent(data_dir=tmp_path) as agent:
        agent.deploy(req)
        deadline = time.monotonic() + 60
        while True:
            s = agent.stats("jumbo")
            if s.rx["frames"] == len(frames) and s.conservation.in_flight == 0 and s.tx["out"]["frames"] >= 6:
                break
            assert time.monotonic() < deadline, f"graph did not drain: {s.rx} {s.conservation}"
            time.sleep(0.05)
        metrics = _scrape(agent)
        agent.remove("jumbo")
    want = [f[6:12] + f[:6] + f[12:] for f in frames if len(f) <= 9216]  # MacSwapper: MACs swapped, rest as is
    got = read_pcap(tmp_path / "out.pcap")
    assert [got.frame(i) for i in range(len(got))] == want
    assert s.rx["oversize"] == 2 and s.drops == {"@rx.oversize": 2}
    assert s.rx["frames"] == s.rx["accepted"] + s.rx["oversize"] and s.conservation.ok
    dep = {"deployment": "jumbo"}
    assert metrics["micronf_rx_service_total", frozenset({**dep, "counter": "oversize"}.items())] == 2
    assert metrics["micronf_graph_drops_total", frozenset({**dep, "where": "@rx", "reason": "oversize"}.items())] == 2


def test_hashes_handed_over_by_the_backend_are_stored_as_the_rx_would_compute_them() -> None:
    frames = multi_flow_frames(flows=12, per_flow=3)
    trace = Trace.from_frames(frames)
    stored = []
    for hashes in (np.zeros(0, np.uint32), flow_hashes(trace)):
        pool = PacketPool.local(64)
        mem = PrivateMemory(RingTable.regions("rings", 1, 64))
        rings = RingTable.format(mem, "rings", 1, 64)
        n = len(frames)
        scratch = [np.empty(n, np.uint32) for _ in range(3)]
        sent = rx_burst(pool.arrays, rings.ctrl, rings.slots, np.array([1, 0], np.int64), np.zeros(J_WORDS, np.int64),
                        trace.data, trace.offsets, trace.lengths, n, hashes, compile_rules([]), 0,
                        np.zeros(64, np.int64), *scratch)
        got = np.empty(64, np.uint32)
        k = ring_dequeue(rings.ctrl[0], rings.slots[0], got, 64)
        assert sent == k == n
        stored.append([int(pool.arrays.words[h, M_HASH]) for h in got[:k]])
    assert stored[0] == stored[1] == [ref_frame_hash(f) for f in frames]
