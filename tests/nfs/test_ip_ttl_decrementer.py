"""IPTtlDecrementer: TTL - 1 with the checksum scapy would compute; TTL <= 1 expires; junk is dropped."""

from __future__ import annotations

import random

from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
    IPOption_Timestamp,
)
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum

from micronf.nfs.ip_ttl_decrementer import IPTtlDecrementer
from micronf.runtime.descriptor import Access
from micronf.runtime.harness import run_kernel


def random_packet(rng: random.Random, ttl: int) -> Packet:
    """A random IPv4 header (options, fragment fields, ToS, addresses) over a random payload."""
    options = rng.choice([
        [],
        [IPOption_NOP()],
        [IPOption_Router_Alert()],
        [IPOption_RR(routers=[f"10.0.0.{k}" for k in range(rng.randint(0, 9))])],
        [IPOption_NOP(), IPOption_Timestamp(flg=0, timestamp=[rng.randrange(2**32)])],
    ])
    ip = IP(
        src=f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        dst=f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        ttl=ttl, tos=rng.randrange(256), id=rng.randrange(65536), flags=rng.choice(["", "DF", "MF"]),
        frag=rng.choice([0, 0, rng.randrange(8192)]), options=options,
    )
    payload = rng.choice([TCP(sport=rng.randrange(65536), dport=80), UDP(), ICMP(), Raw(b"x" * rng.randrange(40))])
    l2 = Ether() / Dot1Q(vlan=rng.randrange(4096)) if rng.random() < 0.3 else Ether()
    return l2 / ip / payload


def decremented(pkt: Packet) -> bytes:
    """``pkt`` with TTL - 1 and the IP checksum recomputed from scratch by scapy."""
    out = Ether(bytes(pkt))
    out[IP].ttl -= 1
    del out[IP].chksum
    return bytes(out)


def test_ttl_is_decremented_and_checksum_equals_a_full_recompute() -> None:
    rng = random.Random(7)
    pkts = [random_packet(rng, ttl) for ttl in [2, 255, 3, 128] + [rng.randint(2, 255) for _ in range(200)]]
    frames = [bytes(p) for p in pkts]
    run = run_kernel(IPTtlDecrementer(), frames)
    assert run.verdicts == ["out"] * len(frames)
    expected = [decremented(p) for p in pkts]
    assert run.outputs["out"] == expected
    assert all(checksum(bytes(Ether(out)[IP])[: Ether(out)[IP].ihl * 4]) == 0 for out in expected[:20])


def test_ttl_one_or_zero_expires_unchanged() -> None:
    rng = random.Random(3)
    frames = [bytes(random_packet(rng, ttl)) for ttl in (0, 1, 2, 1, 0)]
    run = run_kernel(IPTtlDecrementer(), frames)
    assert run.verdicts == ["expired", "expired", "out", "expired", "expired"]
    assert run.outputs["expired"] == [frames[0], frames[1], frames[3], frames[4]]


def test_a_wrong_checksum_stays_wrong() -> None:
    pkt = Ether() / IP(ttl=64, chksum=0x1234) / UDP()
    run = run_kernel(IPTtlDecrementer(), [bytes(pkt)])
    out = Ether(run.outputs["out"][0])
    assert out[IP].ttl == 63
    assert checksum(bytes(out[IP])[:20]) != 0
    # RFC 1624: the checksum moved by exactly the change of the TTL/protocol word.
    assert (out[IP].chksum - 0x1234) % 0xFFFF == 0x100


def test_non_ipv4_and_broken_headers_are_dropped() -> None:
    good = bytes(Ether() / IP(ttl=5) / UDP())
    rr = bytes(Ether() / IP(ttl=5, options=[IPOption_RR(routers=["1.2.3.4"] * 3)]) / UDP())
    not_ipv4 = [bytes(Ether() / ARP()), bytes(Ether() / IPv6() / UDP()), bytes(Ether() / Dot1Q() / Dot1Q() / IP())]
    broken = [
        b"",
        good[:13],  # no EtherType
        good[:33],  # fixed IP header cut off
        good[:14] + bytes([0x35]) + good[15:],  # version 3
        good[:14] + bytes([0x44]) + good[15:],  # IHL 4
        rr[:40],  # options run past the end of the frame
    ]
    run = run_kernel(IPTtlDecrementer(), [*not_ipv4, *broken, good])
    assert run.verdicts == ["drop:not_ipv4"] * 3 + ["drop:bad_header"] * len(broken) + ["out"]
    assert run.drops["not_ipv4"] == not_ipv4
    assert run.drops["bad_header"] == broken


def test_descriptor_and_ports() -> None:
    d = IPTtlDecrementer.descriptor
    assert (d.stateful, d.l2, d.l3, d.l4, d.payload, d.may_drop) == (
        False, Access.NOP, Access.WRITE, Access.NOP, Access.NOP, True)
    assert IPTtlDecrementer.verdict_names() == ("out", "expired", "drop:not_ipv4", "drop:bad_header")
