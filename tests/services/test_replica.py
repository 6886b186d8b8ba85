"""Run-to-completion replicas (issue 14): N processes, each a whole fused copy of the graph fed by
its flow shard. Real processes and segments; the expectations come from scapy and from flow hashes
computed here independently (tests/shards.py)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from micronf.runtime.graph import EdgeSpec, GraphSpec, NodeSpec, chain_names, plan
from micronf.runtime.launch import GraphRuntime, LaunchError
from micronf.services.config import RxConfig, TxConfig, TxOutput
from micronf.services.iomem import J_IDLE, J_STATE
from micronf.services.replica import RX_SLOT, TX_SLOT, replica_spec
from micronf.services.replicas import MergedStats, ReplicaSet
from micronf.services.tx import counted_unfreed
from tests import netns
from tests.netns import NetLab, send_frames
from tests.shards import flow_key, multi_flow_frames, ref_shard

lab = netns.lab  # the fixture, under the name the tests ask for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def _no_segment_left() -> Iterator[None]:
    yield
    assert not [p for p in os.listdir("/dev/shm") if p.startswith(f"micronf-rep-{os.getpid()}-")]


def ttl_chain(k: int) -> GraphSpec:
    names = chain_names(["IPTtlDecrementer"] * k)
    return GraphSpec(name="rep", nodes=[NodeSpec(name=n, type="IPTtlDecrementer") for n in names],
                     edges=[EdgeSpec(src=a, label="out", dst=b) for a, b in pairwise(names)], entry=names[0])


def exits(spec: GraphSpec) -> list[str]:
    return list(dict.fromkeys(x.name for x in plan(replica_spec(spec)).exits))


def tx_config(spec: GraphSpec, out: dict[str, Path] | None = None) -> TxConfig:
    outputs = [TxOutput(exit=e, backend={"kind": "pcap", "path": str(out[e])} if out else {"kind": "null"})
               for e in exits(spec)]
    return TxConfig(name="rep", burst=64, coalesce_us=0, outputs=outputs, ns_per_cycle=1.0)


def wait_done(rs: ReplicaSet, timeout: float = 60) -> MergedStats:
    """The merged counters once every source is exhausted and no buffer is in use."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = rs.stats()
        if s.rx["exhausted"] == rs.n and s.in_flight == 0:
            return s
        time.sleep(0.02)
    raise AssertionError(f"replicas not drained: {rs.stats()}")


def decremented(frame: bytes, by: int) -> bytes:
    """``frame`` with its IPv4 TTL lowered by ``by`` and the header checksum recomputed (scapy)."""
    pkt = Ether(frame)
    pkt[IP].ttl -= by
    del pkt[IP].chksum
    return bytes(pkt)


def test_each_flow_leaves_through_one_replica_transformed_byte_for_byte(tmp_path: Path) -> None:
    frames = multi_flow_frames()
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [Ether(f) for f in frames])
    spec = ttl_chain(2)
    n = 2
    outs = [{e: tmp_path / f"r{i}-{e}.pcap" for e in exits(spec)} for i in range(n)]
    rx = RxConfig(name="rep", burst=256, coalesce_us=0, backend={"kind": "pcap", "path": str(src)})
    rs = ReplicaSet(spec, n, rx, [tx_config(spec, o) for o in outs], burst=512)
    with rs:
        pids = rs.pids()
        assert len(set(pids)) == n and all(pids)
        merged = wait_done(rs)
        parts = [rs.replica_stats(i) for i in range(n)]
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)  # stopped and reaped
    ip = [f for f in frames if flow_key(f) is not None]
    owner: dict[object, int] = {}
    for i in range(n):
        mine = [f for f in ip if ref_shard(f, n) == i]
        assert mine, "the trace's 48 flows should reach both replicas"
        got_out = [bytes(p) for p in rdpcap(str(outs[i]["out"]))]
        got_exp = [bytes(p) for p in rdpcap(str(outs[i]["expired"]))]
        # TTL >= 3: out with TTL - 2; TTL 2: the second µNF's expired exit with TTL 1; in order
        assert got_out == [decremented(f, 2) for f in mine if Ether(f)[IP].ttl >= 3]
        assert got_exp == [decremented(f, 1) for f in mine if Ether(f)[IP].ttl == 2]
        assert len(rdpcap(str(outs[i]["IPTtlDecrementer0.expired"]))) == 0  # no TTL 1 in the input
        for f in got_out + got_exp:
            assert owner.setdefault(flow_key(f), i) == i  # every packet of a flow on one replica
    # the merged view is the sum, and accounts for every frame
    assert merged.rx["frames"] == len(frames) == sum(p.rx["frames"] for p in parts)
    assert merged.sent == sum(p.sent for p in parts) == len(ip)
    assert merged.freed_inside == 1  # the ARP frame: not_ipv4
    assert merged.nodes["IPTtlDecrementer0"]["rx"] == len(frames)
    assert merged.nodes["IPTtlDecrementer0"]["rx"] == sum(p.nodes["IPTtlDecrementer0"]["rx"] for p in parts)
    assert merged.in_flight == 0 and merged.conserved
    assert all(p.conserved for p in parts)


def test_a_generator_count_is_sent_exactly_once_over_the_replicas() -> None:
    spec = ttl_chain(1)
    count = 300_000
    rx = RxConfig(name="rep", burst=2048, coalesce_us=0,
                  backend={"kind": "generator", "count": count, "flows": 64, "templates": 4096, "sizes": [60],
                           "protocols": {"udp": 1.0}})
    with ReplicaSet(spec, 2, rx, tx_config(spec)) as rs:
        merged = wait_done(rs)
        parts = [rs.replica_stats(i) for i in range(2)]
    assert merged.rx["frames"] == merged.rx["accepted"] == count
    assert merged.tx["out"]["frames"] == count  # generated TTL 64: every frame out
    assert all(p.rx["frames"] > count // 4 for p in parts)  # 64 flows: both shards carry a share
    assert merged.conserved and merged.in_flight == 0
    assert merged.nodes["IPTtlDecrementer"]["cycles"] > 0


def test_a_graph_that_cannot_fuse_whole_is_refused_before_anything_starts() -> None:
    names = ["a", "b", "c"]
    spec = GraphSpec(name="fork", nodes=[NodeSpec(name=n, type="MacSwapper") for n in names],
                     edges=[EdgeSpec(src="a", label="out", dst="b"), EdgeSpec(src="a", label="out", dst="c")],
                     entry="a")
    rx = RxConfig(name="fork", burst=64, coalesce_us=0, backend=None)
    with pytest.raises(Exception, match="only a chain"):
        ReplicaSet(spec, 2, rx, TxConfig(name="fork", burst=64, coalesce_us=0, outputs=[], ns_per_cycle=1.0))


def test_a_replica_that_cannot_open_its_input_says_why(tmp_path: Path) -> None:
    spec = ttl_chain(1)
    rx = RxConfig(name="rep", burst=64, coalesce_us=0, backend={"kind": "pcap", "path": str(tmp_path / "none")})
    rs = ReplicaSet(spec, 2, rx, tx_config(spec))
    with pytest.raises(LaunchError, match="no such capture file"):
        rs.start(timeout=60)


@pytest.mark.parametrize("kills", [1, 5])
def test_kill_9_of_one_replica_loses_only_what_it_held(kills: int) -> None:
    spec = ttl_chain(2)
    count = 12_000_000  # at full speed: the replica is inside a step (holding packets) nearly all the time
    rx = RxConfig(name="rep", burst=1024, coalesce_us=0,
                  backend={"kind": "generator", "count": count, "flows": 64, "templates": 4096, "sizes": [60],
                           "protocols": {"udp": 1.0}})
    with ReplicaSet(spec, 2, rx, tx_config(spec), burst=1024) as rs:
        other = rs.pids()[1]
        recoveries = []
        for k in range(kills):
            want = (k + 1) * count // (2 * (kills + 1))  # kill replica 0 while its traffic flows
            deadline = time.monotonic() + 60
            while rs.replica_stats(0).rx["frames"] < want and time.monotonic() < deadline:
                time.sleep(0.002)
            child = rs.children[0]
            assert child is not None
            os.kill(rs.pids()[0], signal.SIGKILL)
            child.wait(timeout=30)
            recoveries.append(rs.restart(0))
        merged = wait_done(rs)
        parts = [rs.replica_stats(i) for i in range(2)]
        assert rs.pids()[1] == other  # the other replica never stopped
    # where each kill landed is chance (between steps, or with a burst in the Rx, µNF or Tx role):
    # the accounting below must be exact either way
    held = sum(r.held_lost for r in recoveries)
    assert all(r.held_lost >= 0 and r.rx_lost >= 0 for r in recoveries)
    assert held + sum(r.rx_lost for r in recoveries) <= kills * (1024 + 3 * 512)  # at most what a step holds
    # no frame twice, none skipped: the restarted source resumed where the counters said
    assert merged.rx["frames"] == count
    assert merged.rx["lost_in_crash"] == sum(r.rx_lost for r in recoveries)
    assert parts[1].rx["lost_in_crash"] == 0 and parts[1].lost == 0 and parts[1].conserved
    assert merged.lost == held
    # everything else left, exactly: rx == tx + dropped (incl. the crashes' losses) + in flight (0)
    assert merged.in_flight == 0 and merged.conserved
    assert merged.sent == count - merged.rx["lost_in_crash"] - held


def test_replicas_share_an_interface_by_flow_through_packet_fanout(lab: NetLab, tmp_path: Path) -> None:
    a, b = lab.netns(2)
    link = lab.veth(a, b)
    frames = [f for f in multi_flow_frames(flows=40, per_flow=4) if flow_key(f) is not None]
    spec = ttl_chain(1)
    n = 2
    outs = [{e: tmp_path / f"r{i}-{e}.pcap" for e in exits(spec)} for i in range(n)]
    rx = RxConfig(name="rep", burst=256, coalesce_us=0,
                  backend={"kind": "afpacket", "iface": link.if_b, "netns": b, "block_timeout_ms": 2})
    with ReplicaSet(spec, n, rx, [tx_config(spec, o) for o in outs], burst=512) as rs:
        assert lab.call(a, send_frames, link.if_a, frames) == len(frames)
        deadline = time.monotonic() + 30
        while rs.stats().sent < len(frames) and time.monotonic() < deadline:
            time.sleep(0.05)
        merged = rs.stats()
        parts = [rs.replica_stats(i) for i in range(n)]
    assert merged.rx["frames"] == merged.sent == len(frames) and merged.conserved
    assert all(p.rx["frames"] > 0 for p in parts)  # 40 flows: the kernel gave both sockets some
    got = [[bytes(p) for p in rdpcap(str(o["out"]))] for o in outs]
    owner: dict[object, int] = {}
    for i, part in enumerate(got):
        for f in part:
            assert owner.setdefault(flow_key(f), i) == i  # a flow reaches one replica only
    expect = [decremented(f, 1) for f in frames]
    assert sorted(got[0] + got[1]) == sorted(expect)  # every frame once, transformed byte for byte
    for part in got:
        assert part == [f for f in expect if f in set(part)]  # per replica, in the order sent


def test_a_paused_replica_holds_nothing() -> None:
    spec = ttl_chain(2)
    source = {"kind": "generator", "flows": 64, "templates": 4096, "sizes": [60], "protocols": {"udp": 1.0}}
    rx = RxConfig(name="rep", burst=1024, coalesce_us=0, backend=source)
    with ReplicaSet(spec, 2, rx, tx_config(spec), burst=1024) as rs:
        g = rs.graphs[0]
        line = g.io_line(RX_SLOT)
        for _ in range(5):
            time.sleep(0.05)
            assert GraphRuntime.pause([line], timeout=10) == []  # paused between two steps
            mem = g.memory()
            assert int(mem.seg.view("rx.journal", np.int64)[J_STATE]) == J_IDLE
            assert mem.pool.stats().in_use == int(g.ring_occupancy().sum())  # every buffer in a ring or free
            assert g.counted_unfreed() == [0]
            assert counted_unfreed(mem, len(exits(spec)), g.io_client_base + TX_SLOT, g.io_line(TX_SLOT)) == 0
            GraphRuntime.resume([line])
        assert rs.replica_stats(0).rx["frames"] > 0
