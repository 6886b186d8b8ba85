"""CheckIPHeader: the same pass/drop decisions and output bytes as Click's CheckIPHeader, finer reasons.

The expectations come from ``click_check``, a direct transcription of Click's
``CheckIPHeader::simple_action`` (elements/ip/checkipheader.cc) into Python, run on the IP header
at the Ethernet/802.1Q offset, with scapy's checksum routine.
"""

from __future__ import annotations

import random
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum

from micronf.nfs.check_ip_header import CheckIPHeader
from micronf.runtime.descriptor import Access
from micronf.runtime.harness import run_kernel
from micronf.runtime.nf import NFConfigError

# Our reasons that Click reports as "bad IP length".
CLICK_REASON = {"hlen_exceeds_frame": "bad_ip_len", "len_below_hlen": "bad_ip_len", "len_exceeds_frame": "bad_ip_len"}


def click_check(frame: bytes, bad_src: tuple[bytes, ...] = (), check_sum: bool = True) -> tuple[str, bytes]:
    """Click's CheckIPHeader on the IP header behind Ethernet (and one 802.1Q tag): (verdict, frame out)."""
    offset = 18 if frame[12:14] == b"\x81\x00" else 14
    if len(frame) < offset:
        return "drop:tiny", frame
    if frame[offset - 2 : offset] != b"\x08\x00":
        return "drop:not_ipv4", frame  # our documented decision: Click is never fed these
    ip = frame[offset:]
    plen = len(ip)
    if plen < 20:
        return "drop:tiny", frame
    if ip[0] >> 4 != 4:
        return "drop:bad_version", frame
    hlen = (ip[0] & 0x0F) << 2
    if hlen < 20:
        return "drop:bad_hlen", frame
    length = struct.unpack("!H", ip[2:4])[0]
    if length > plen or length < hlen:
        return "drop:bad_ip_len", frame
    if check_sum and checksum(ip[:hlen]) != 0:
        return "drop:bad_checksum", frame
    if ip[12:16] in bad_src:
        return "drop:bad_src", frame
    return "out", frame[: offset + length]


def coarse(verdict: str) -> str:
    reason = verdict.removeprefix("drop:")
    return f"drop:{CLICK_REASON[reason]}" if reason in CLICK_REASON else verdict


def with_ip(pkt: Packet, **fields: object) -> bytes:
    """``pkt`` rebuilt with IP header fields overridden (the checksum recomputed unless given)."""
    pkt = pkt.copy()
    for name, value in fields.items():
        setattr(pkt[IP], name, value)
    if "chksum" not in fields:
        del pkt[IP].chksum
    return bytes(pkt)


BASE = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.1.2.3", dst="192.168.7.9", ttl=9)
TCP_PKT = BASE / TCP(sport=1234, dport=80, flags="S") / b"hello"
PAD = b"\x00" * 6


def valid_packets() -> list[bytes]:
    opts = [IPOption_RR(routers=["1.1.1.1", "2.2.2.2"]), IPOption_NOP(), IPOption_Router_Alert()]
    return [
        bytes(TCP_PKT),
        bytes(BASE / UDP(sport=53, dport=5353) / b"q"),
        bytes(BASE / ICMP() / b"ping") + PAD,  # short frame with Ethernet padding
        bytes(Ether() / IP(options=opts) / TCP() / b"opts"),
        bytes(Ether() / Dot1Q(vlan=7) / IP(dst="8.8.8.8") / UDP() / b"vlan") + PAD,
        bytes(Ether() / IP(flags="MF", frag=0, proto=6) / Raw(b"\x00" * 24)),
        bytes(Ether() / IP(frag=100, proto=17) / Raw(b"tail of a datagram")),
        bytes(Ether() / IP(proto=47) / Raw(b"\x00" * 26)) + b"\xff" * 30,  # GRE with trailing garbage
        bytes(Ether() / IP()),  # header only
        bytes(Ether() / Dot1Q() / IP(options=[IPOption_NOP()] * 4)),  # options end exactly at the frame's end
    ]


def test_valid_packets_pass_and_padding_is_trimmed_to_the_ip_length() -> None:
    frames = valid_packets()
    run = run_kernel(CheckIPHeader(), frames)
    expected = [click_check(f) for f in frames]
    assert all(v == "out" for v, _ in expected)
    assert run.verdicts == ["out"] * len(frames)
    assert run.outputs["out"] == [out for _, out in expected]
    assert run.counters == {"trimmed": 3}
    assert run.outputs["out"][2] == frames[2][: -len(PAD)]


MALFORMED: list[tuple[str, bytes]] = [
    ("not_ipv4", bytes(Ether() / ARP())),
    ("not_ipv4", bytes(Ether() / IPv6() / UDP())),
    ("not_ipv4", bytes(Ether() / Dot1Q() / Dot1Q() / IP() / UDP())),  # QinQ: one tag is looked through
    ("tiny", b""),
    ("tiny", bytes(TCP_PKT)[:13]),
    ("tiny", bytes(Ether() / Dot1Q() / IP())[:17]),
    ("tiny", bytes(TCP_PKT)[:33]),
    ("tiny", bytes(Ether() / Dot1Q() / IP())[:37]),
    ("bad_version", with_ip(TCP_PKT, version=6)),
    ("bad_version", with_ip(TCP_PKT, version=0)),
    ("bad_hlen", with_ip(TCP_PKT, ihl=4)),
    ("bad_hlen", with_ip(TCP_PKT, ihl=0)),
    ("hlen_exceeds_frame", bytes(Ether() / IP(options=[IPOption_RR(routers=["1.1.1.1"] * 4)]))[:40]),
    ("hlen_exceeds_frame", with_ip(Ether() / IP(), ihl=15, len=60)),
    ("hlen_exceeds_frame", bytes(Ether() / IP(options=[IPOption_NOP()] * 4))[:-1]),  # one byte short
    ("len_below_hlen", with_ip(TCP_PKT, len=19)),
    ("len_below_hlen", with_ip(TCP_PKT, len=0)),  # TSO-style zero length: Click drops it too
    ("len_below_hlen", with_ip(Ether() / IP(options=[IPOption_NOP()] * 4) / UDP(), len=22)),
    ("len_exceeds_frame", with_ip(TCP_PKT, len=len(TCP_PKT) - 14 + 1)),
    ("len_exceeds_frame", bytes(TCP_PKT)[:-1]),
    ("bad_checksum", with_ip(TCP_PKT, chksum=0x1234)),
    ("bad_checksum", bytes(TCP_PKT)[:22] + b"\x42" + bytes(TCP_PKT)[23:]),  # TTL changed in flight
    ("bad_checksum", with_ip(Ether() / Dot1Q() / IP(options=[IPOption_Router_Alert()]) / UDP(), chksum=0)),
]


@pytest.mark.parametrize(("reason", "frame"), MALFORMED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(MALFORMED)])
def test_each_malformation_is_dropped_with_its_own_reason(reason: str, frame: bytes) -> None:
    run = run_kernel(CheckIPHeader(), [frame])
    assert run.verdicts == [f"drop:{reason}"]
    assert run.drops[reason] == [frame]  # dropped frames are not modified either
    assert coarse(run.verdicts[0]) == click_check(frame)[0]


def test_random_corruption_decides_like_click() -> None:
    rng = random.Random(1)
    valid = valid_packets()
    frames: list[bytes] = []
    for _ in range(400):
        raw = bytearray(rng.choice(valid))
        l3 = 18 if raw[12:14] == b"\x81\x00" else 14
        for _ in range(rng.randint(0, 2)):  # flip header bytes: version/IHL, lengths, addresses, checksum
            pos = l3 + rng.choice([0, 0, 2, 3, 3, 8, 10, 11, 12, 19, rng.randrange(24)])
            if pos == l3:  # one nibble: the version or the IHL
                raw[pos] = rng.choice([(raw[pos] & 0xF0) | rng.randrange(16), rng.randrange(16) << 4 | raw[pos] & 0xF])
            elif pos < len(raw):
                raw[pos] = rng.randrange(256)
        cut = rng.random()
        if cut < 0.25:
            raw = raw[: rng.randrange(len(raw) + 1)]
        elif cut < 0.5:
            raw += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
        frames.append(bytes(raw))
    run = run_kernel(CheckIPHeader(), frames)
    expected = [click_check(f) for f in frames]
    assert [coarse(v) for v in run.verdicts] == [v for v, _ in expected]
    assert run.outputs["out"] == [out for v, out in expected if v == "out"]
    assert run.counters["trimmed"] == sum(1 for f, (v, out) in zip(frames, expected, strict=True)
                                          if v == "out" and out != f)
    assert len({v for v, _ in expected}) >= 6  # the corruption reaches most checks


def test_checksum_check_can_be_switched_off_like_checkipheader2() -> None:
    bad = with_ip(TCP_PKT, chksum=0xBEEF)
    frames = [bad, with_ip(TCP_PKT, len=0, chksum=0xBEEF)]
    run = run_kernel(CheckIPHeader({"checksum": False}), frames)
    assert run.verdicts == ["out", "drop:len_below_hlen"]
    assert [coarse(v) for v in run.verdicts] == [click_check(f, check_sum=False)[0] for f in frames]
    assert run.outputs["out"] == [bad]


def test_bad_source_addresses_are_dropped_when_listed() -> None:
    frames = [with_ip(TCP_PKT, src=a) for a in ("0.0.0.0", "255.255.255.255", "10.255.255.255", "10.1.2.3")]
    assert run_kernel(CheckIPHeader(), frames).verdicts == ["out"] * 4  # Click's default: no list
    bad = ["0.0.0.0", "255.255.255.255", "10.255.255.255"]
    run = run_kernel(CheckIPHeader({"bad_src": bad}), frames)
    bad_bytes = tuple(bytes(map(int, a.split("."))) for a in bad)
    assert run.verdicts == [click_check(f, bad_src=bad_bytes)[0] for f in frames] == ["drop:bad_src"] * 3 + ["out"]


def test_config_errors_name_the_field_and_value() -> None:
    with pytest.raises(NFConfigError, match=r"bad_src\[1\]: .*'10\.0\.0\.256'"):
        CheckIPHeader({"bad_src": ["0.0.0.0", "10.0.0.256"]})
    with pytest.raises(NFConfigError, match="offset: Extra inputs are not permitted"):
        CheckIPHeader({"offset": 14})


def test_descriptor_and_docs() -> None:
    d = CheckIPHeader.descriptor
    assert (d.stateful, d.l2, d.l3, d.l4, d.payload, d.may_drop) == (
        False, Access.NOP, Access.READ, Access.NOP, Access.NOP, True)
    sections = CheckIPHeader.doc_sections()
    for reason in CheckIPHeader.drop_reasons:
        assert f"drop:{reason}:" in sections["Ports"]
    assert "trimmed:" in sections["Counters"]
