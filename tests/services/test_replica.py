"""Run-to-completion replicas (issue 14): N processes, each a whole fused copy of the graph fed by
its flow shard. Real processes and segments; the expectations come from scapy and from flow hashes
computed here independently (tests/shards.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from micronf.runtime.graph import EdgeSpec, GraphSpec, NodeSpec, chain_names, plan
from micronf.runtime.launch import LaunchError
from micronf.services.config import RxConfig, TxConfig, TxOutput
from micronf.services.replica import replica_spec
from micronf.services.replicas import MergedStats, ReplicaSet
from tests.shards import flow_key, multi_flow_frames, ref_shard

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
