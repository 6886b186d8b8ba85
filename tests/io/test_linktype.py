"""Raw IP and Linux cooked captures read as Ethernet (issue 10 §3).

Before, `micronf chain` took a raw IP (101) or `tcpdump -i any` (SLL 113, SLL2 276) capture as
Ethernet and dropped every packet as not_ipv4 with "conservation ok". Each capture here is built
with scapy (its own CookedLinux/CookedLinuxV2 layers and ``wrpcap(linktype=...)``), and the
Ethernet frame expected for each packet is built by scapy too, the multicast MACs by scapy's
``getmacbyip``/``in6_getnsmac``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import LLC, CookedLinux, CookedLinuxV2, Dot1Q, Ether, getmacbyip
from scapy.packet import Packet, Raw
from scapy.utils import rdpcap, wrpcap, wrpcapng
from scapy.utils6 import in6_getnsmac

from micronf.io.linktype import read_ethernet, to_ethernet
from micronf.io.pcap_read import read_pcap
from micronf.io.trace import LINKTYPE_ETHERNET, PcapError, Trace

ZERO = "00:00:00:00:00:00"
MAC = "02:00:5e:10:20:30"
V4 = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80) / Raw(b"GET / HTTP/1.1\r\n\r\n")
V4_MCAST = IP(src="10.0.0.1", dst="224.1.2.3") / UDP(sport=5000, dport=5001) / Raw(b"m")
V6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=53, dport=53) / Raw(b"q" * 9)
V6_MCAST = IPv6(src="fe80::1", dst="ff02::1:ff00:1234") / UDP() / Raw(b"ns")
V6_MCAST_MAC = in6_getnsmac(socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:1234"))
SLL_ADDR = bytes.fromhex("02005e102030") + b"\x00\x00"

# (packet type, address length, protocol, payload, expected Ethernet destination, source, type)
COOKED: list[tuple[int, int, int, Packet, str, str, int]] = [
    (0, 6, 0x0800, V4, ZERO, MAC, 0x0800),  # to us
    (4, 6, 0x0800, V4, ZERO, MAC, 0x0800),  # sent by us
    (1, 6, 0x0800, V4, "ff:ff:ff:ff:ff:ff", MAC, 0x0800),  # broadcast
    (2, 6, 0x0800, V4_MCAST, getmacbyip("224.1.2.3"), MAC, 0x0800),  # multicast
    (2, 6, 0x86DD, V6_MCAST, V6_MCAST_MAC, MAC, 0x86DD),
    (0, 0, 0x86DD, V6, ZERO, ZERO, 0x86DD),  # no link-layer address (e.g. a tun device)
    (3, 6, 0x8100, Dot1Q(vlan=7, type=0x0800) / V4, ZERO, MAC, 0x8100),  # VLAN tag kept in place
    (0, 6, 0x0004, LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"stp" * 10), ZERO, MAC, -1),  # 802.2: a length field
]


def _expected(dst: str, src: str, etype: int, payload: Packet) -> bytes:
    body = bytes(payload)
    return bytes(Ether(dst=dst, src=src, type=len(body) if etype < 0 else etype)) + body


def test_raw_ip_gets_an_ethernet_header_from_the_version_nibble(tmp_path: Path) -> None:
    pkts = [V4, V6, Raw(b"\x20" * 30), Raw(b"")]  # the last two: not IP, and an empty record
    for linktype in (101, 12, 14, 228):
        path = tmp_path / f"raw{linktype}.pcap"
        wrpcap(str(path), pkts, linktype=linktype)
        t = read_ethernet(path)
        assert t.linktype == LINKTYPE_ETHERNET and len(t) == 4
        want = [_expected(ZERO, ZERO, 0x0800, V4), _expected(ZERO, ZERO, 0x86DD, V6),
                _expected(ZERO, ZERO, -1, Raw(b"\x20" * 30)), _expected(ZERO, ZERO, -1, Raw(b""))]
        assert [t.frame(i) for i in range(4)] == want
        assert t.orig_lengths.tolist() == [len(w) for w in want]


@pytest.mark.parametrize("version", [1, 2])
def test_linux_cooked_captures_become_ethernet(tmp_path: Path, version: int) -> None:
    pkts = []
    for i, (pkttype, alen, proto, payload, *_) in enumerate(COOKED):
        if version == 1:
            hdr: Packet = CookedLinux(pkttype=pkttype, lladdrtype=1, lladdrlen=alen, src=SLL_ADDR, proto=proto)
        else:
            hdr = CookedLinuxV2(proto=proto, ifindex=3, lladdrtype=1, pkttype=pkttype, lladdrlen=alen, src=SLL_ADDR)
        p = hdr / payload
        p.time = 1_700_000_000 + i
        pkts.append(p)
    path = tmp_path / "cooked.pcap"
    wrpcap(str(path), pkts, linktype=113 if version == 1 else 276)
    t = read_ethernet(path)
    assert t.linktype == LINKTYPE_ETHERNET
    want = [_expected(dst, src, etype, payload) for _, _, _, payload, dst, src, etype in COOKED]
    assert [t.frame(i) for i in range(len(t))] == want
    assert t.ts_ns.tolist() == [(1_700_000_000 + i) * 10**9 for i in range(len(COOKED))]
    assert Ether(t.frame(6))[Dot1Q].vlan == 7 and Ether(t.frame(6))[IP].dst == "10.0.0.2"


def test_cooked_pcapng_and_records_cut_inside_the_link_header(tmp_path: Path) -> None:
    """pcapng too; a record shorter than its SLL header becomes a bare (zero) Ethernet header, and
    a record cut by a snaplen keeps its wire length, adjusted to the new header."""
    full = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=SLL_ADDR, proto=0x0800) / V4
    wrpcapng(str(tmp_path / "c.pcapng"), [full])
    t = read_ethernet(tmp_path / "c.pcapng")
    assert t.frame(0) == _expected(ZERO, MAC, 0x0800, V4)
    base = Trace.from_frames([bytes(full)[:10], bytes(full)[:40]])
    cut = Trace(base.data, base.offsets, base.lengths, np.full(2, len(full), np.int32), base.ts_ns, 113)
    e = to_ethernet(cut)
    assert e.frame(0) == bytes(14)
    assert e.frame(1) == _expected(ZERO, MAC, 0x0800, V4)[:38]
    assert e.orig_lengths.tolist() == [len(full) - 2] * 2


def test_other_link_types_are_one_line_errors(tmp_path: Path) -> None:
    wrpcap(str(tmp_path / "wifi.pcap"), [Raw(b"x" * 40)], linktype=105)
    with pytest.raises(PcapError, match=r"wifi\.pcap: link type 105 \(IEEE 802\.11\) is not supported \(supported: "
                       r"1 Ethernet, 101 .* raw IP, 113 Linux cooked SLL, 276 Linux cooked SLL2\)") as exc:
        read_ethernet(tmp_path / "wifi.pcap")
    assert "\n" not in str(exc.value)
    wrpcap(str(tmp_path / "odd.pcap"), [Raw(b"x")], linktype=4242)
    with pytest.raises(PcapError, match=r"link type 4242 is not supported"):
        read_ethernet(tmp_path / "odd.pcap")
    eth = Trace.from_frames([bytes(Ether() / V4)])
    assert to_ethernet(eth) is eth  # Ethernet is taken as it is


@pytest.mark.timeout(600)
def test_chain_command_on_a_tcpdump_any_capture(tmp_path: Path) -> None:
    """`micronf chain` on an SLL2 capture: the µNFs see IPv4 (TTL decremented, MACs swapped), the
    outputs are Ethernet pcaps; an unsupported link type is a one-line error before anything runs."""
    from typer.testing import CliRunner

    from micronf.app.cli import app

    pkts = [CookedLinuxV2(proto=0x0800, ifindex=2, lladdrtype=1, pkttype=4 * (i % 2), lladdrlen=6, src=SLL_ADDR)
            / IP(src="10.0.0.1", dst="10.0.0.2", ttl=5 + i) / UDP(sport=4000 + i, dport=53) / Raw(bytes(i))
            for i in range(20)]
    wrpcap(str(tmp_path / "any.pcap"), pkts, linktype=276)
    res = CliRunner().invoke(app, ["chain", "CheckIPHeader -> IPTtlDecrementer -> MacSwapper",
                                   "--pcap", str(tmp_path / "any.pcap"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "20 in, 20 written, 0 freed inside: conservation ok" in res.output
    want = []
    for p in pkts:
        ip = p[IP].copy()
        ip.ttl -= 1
        del ip.chksum
        want.append(bytes(Ether(dst=MAC, src=ZERO, type=0x0800) / IP(bytes(ip))))
    assert read_pcap(tmp_path / "out" / "out.pcap").linktype == LINKTYPE_ETHERNET
    assert [bytes(p) for p in rdpcap(str(tmp_path / "out" / "out.pcap"))] == want
    wrpcap(str(tmp_path / "wifi.pcap"), [Raw(b"x" * 40)], linktype=105)
    res = CliRunner().invoke(app, ["chain", "MacSwapper", "--pcap", str(tmp_path / "wifi.pcap"),
                                   "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "link type 105 (IEEE 802.11) is not supported" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o2").exists()
