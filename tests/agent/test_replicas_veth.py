"""Two replicas share a real interface through the agent: frames into a veth → two replicas' AF_PACKET
sockets in one PACKET_FANOUT_HASH group → CheckIPHeader → IPTtlDecrementer → one pcap per replica.

The kernel picks the replica of a flow (its own flow hash, not the jump hash), so the test checks
what must hold whatever it picks: every frame came out exactly once, each flow through one replica
only, transformed byte for byte as scapy says, and the agent's per-replica counters match the files.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapReader

from micronf.agent.autoscaler import REPLICAS, Decision
from micronf.agent.core import Agent
from micronf.api.models import DeployRequest, GraphStats
from tests import netns
from tests.agent.replicacheck import parse
from tests.netns import NetLab, Veth, send_frames

lab = netns.lab
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FLOWS, PER_FLOW = 64, 8


def _frames(a: Veth, per_flow: int) -> list[bytes]:
    frames = []
    for k in range(per_flow):
        for f in range(FLOWS):
            l4 = TCP(sport=1024 + f, dport=80, flags="PA", seq=k) if f % 2 else UDP(sport=5000 + f, dport=53)
            frames.append(bytes(Ether(src=a.mac_a, dst=a.mac_b) / IP(src="192.0.2.1", dst=f"198.51.100.{f + 1}",
                                                                     ttl=30 + k) / l4 / (b"p" * (8 + k))))
    return frames


def _request(a: Veth, dut: str, replicas: int, output: dict[str, object]) -> DeployRequest:
    return DeployRequest.model_validate({
        "name": "veth-rep", "mode": "replicas", "replicas": replicas,
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"}, {"name": "ttl", "type": "IPTtlDecrementer"}],
                  "edges": [{"src": "chk", "label": "out", "dst": "ttl"}], "entry": "chk"},
        "rx": {"kind": "afpacket", "iface": a.if_b, "netns": dut},
        "rules": [{"src": "192.0.2.0/24"}],  # only the test's frames (not the kernel's own, e.g. IPv6 ND)
        "outputs": {"out": {"backend": output}}, "autoscale": {"enabled": False}})


def _accepted(agent: Agent, total: int) -> GraphStats:
    """Stats once ``total`` frames were accepted and nothing is in flight."""
    deadline = time.monotonic() + 60
    while True:
        s = agent.stats("veth-rep")
        if s.rx["accepted"] >= total and s.conservation.in_flight == 0:
            return s
        assert time.monotonic() < deadline, s.rx
        time.sleep(0.05)


def test_two_replicas_split_a_veth_by_flow(lab: NetLab, tmp_path: Path) -> None:
    src, dut = lab.netns(2)
    a = lab.veth(src, dut)
    frames = _frames(a, PER_FLOW)

    def transformed(frame: bytes) -> bytes:
        pkt = Ether(frame)
        pkt[IP].ttl -= 1
        del pkt[IP].chksum
        return bytes(Ether(bytes(pkt)))

    want = Counter(transformed(f) for f in frames)
    with Agent(data_dir=tmp_path) as agent:
        agent.deploy(_request(a, dut, 2, {"kind": "pcap", "path": "out.pcap"}))
        time.sleep(0.5)  # both sockets bound and in the group
        lab.call(src, send_frames, a.if_a, frames, 32, 0.002)
        s = _accepted(agent, len(frames))
        agent.remove("veth-rep")  # the outputs are flushed and closed
    files = [[bytes(d) for d, _ in RawPcapReader(str(tmp_path / f"out.r{i}.pcap"))] for i in range(2)]
    assert Counter(files[0] + files[1]) == want  # every frame exactly once, transformed as scapy says
    flows = [{parse(f).flow for f in got} for got in files]
    assert flows[0] and flows[1] and not flows[0] & flows[1], "a flow went through both replicas"
    assert [r.tx["out"]["frames"] for r in s.replicas] == [len(got) for got in files]
    assert s.rx["accepted"] == len(frames) and s.conservation.ok


def test_a_replica_added_to_a_veth_input_joins_the_fanout_group(lab: NetLab, tmp_path: Path) -> None:
    """Scale-out of an AF_PACKET input (by hand: the test's traffic never overflows a socket): the
    running replica is resharded into the group, the new one joins it; no frame twice or lost."""
    src, dut = lab.netns(2)
    a = lab.veth(src, dut)
    frames = _frames(a, PER_FLOW)
    with Agent(data_dir=tmp_path, monitor=False) as agent:
        agent.deploy(_request(a, dut, 1, {"kind": "null"}))
        time.sleep(0.5)
        lab.call(src, send_frames, a.if_a, frames, 32, 0.002)
        before = _accepted(agent, len(frames))
        agent._get("veth-rep").apply(Decision(REPLICAS, "out", "the test asks"))
        assert [p.replica for p in agent.deployment("veth-rep").processes] == [0, 1]
        time.sleep(0.5)
        lab.call(src, send_frames, a.if_a, frames, 32, 0.002)
        s = _accepted(agent, 2 * len(frames))
        agent.remove("veth-rep")
    assert before.rx["accepted"] == len(frames)
    assert s.rx["accepted"] == 2 * len(frames), "a frame was received twice or lost"
    assert s.replicas[1].rx["accepted"] > 0 and s.replicas[0].rx["accepted"] > len(frames)
    assert s.tx["out"]["frames"] == 2 * len(frames) and s.conservation.ok
