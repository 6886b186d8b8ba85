"""Real interfaces: frames into a veth → agent Rx (AF_PACKET) → CheckIPHeader → IPTtlDecrementer → Tx out another veth.

Three namespaces the test creates: ``src`` sends scapy-built frames, ``dut`` holds both veth ends
the agent's Rx and Tx services open (their sockets are created inside ``dut``), ``sink`` captures.
What arrives at the sink is compared byte for byte with what scapy says the chain must produce.
"""

from __future__ import annotations

import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from micronf.agent.core import Agent
from micronf.api.models import DeployRequest
from micronf.io.afpacket import AfPacketSpec
from micronf.io.afpacket_rx import AfPacketRx
from tests import netns
from tests.netns import NetLab, send_frames

lab = netns.lab
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NEXT_HOP = "02:00:00:00:0e:0f"


def capture(iface: str, count: int, timeout: float) -> list[bytes]:
    """Receive ``count`` frames on ``iface`` (run inside the sink namespace)."""
    rx = AfPacketRx(AfPacketSpec(iface=iface))
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            b = rx.recv(256)
            got += [bytes(b.data[b.off[i] : b.off[i] + b.length[i]]) for i in range(b.n)]
            if not b.n:
                time.sleep(0.001)
    finally:
        rx.close()
    return got


def test_veth_rx_chain_tx_byte_for_byte(lab: NetLab) -> None:
    src, dut, sink = lab.netns(3)
    a = lab.veth(src, dut)
    b = lab.veth(dut, sink)
    frames = []
    for i in range(400):
        l4 = TCP(sport=1024 + i, dport=80, flags="S") if i % 3 else UDP(sport=5000 + i, dport=53)
        ttl = 1 if i % 25 == 0 else 30 + i % 30
        frames.append(bytes(Ether(src=a.mac_a, dst=a.mac_b) / IP(src="192.0.2.1", dst=f"198.51.100.{i % 200 + 1}",
                                                                 ttl=ttl) / l4 / (b"p" * (i % 64))))
    want = []
    for f in frames:
        pkt = Ether(f)
        if pkt[IP].ttl <= 1:
            continue  # IPTtlDecrementer's "expired" exit: not sent anywhere
        pkt[IP].ttl -= 1
        del pkt[IP].chksum
        pkt[Ether].dst = NEXT_HOP
        want.append(bytes(Ether(bytes(pkt))))
    # Ethernet frames shorter than 60 bytes are padded by nobody on a veth: sizes are kept as sent
    req = DeployRequest.model_validate({
        "name": "veth",
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"}, {"name": "ttl", "type": "IPTtlDecrementer"}],
                  "edges": [{"src": "chk", "label": "out", "dst": "ttl"}], "entry": "chk"},
        "rx": {"kind": "afpacket", "iface": a.if_b, "netns": dut},
        "outputs": {"out": {"backend": {"kind": "afpacket", "iface": b.if_a, "netns": dut},
                            "next_hop_mac": NEXT_HOP}},
        "rules": [{"src": "192.0.2.0/24"}],
        "autoscale": {"enabled": False},
    })
    with Agent() as agent:
        agent.deploy(req)
        catcher = lab.spawn(sink, capture, b.if_b, len(want), 60.0)
        time.sleep(0.5)  # the sink's socket is bound
        lab.call(src, send_frames, a.if_a, frames, 50, 0.002)
        got = catcher.result(90)
        deadline = time.monotonic() + 20
        while True:
            s = agent.stats("veth")
            if (s.rx["frames"] >= len(frames) and s.conservation.in_flight == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        agent.remove("veth")
    assert got == want
    assert s.rx["accepted"] == len(frames) and s.rx["unmatched"] == 0
    assert s.tx["out"]["frames"] == len(want) and s.tx["expired"]["no_output"] == len(frames) - len(want)
    assert s.conservation.ok and s.conservation.rx == s.conservation.tx + s.conservation.dropped
