"""Tests for ``micronf.packet.headers`` with expectations computed independently (scapy/struct).

Besides field-by-field checks against scapy, every catalogue packet is cut at every length
0..len: each helper must return the full-frame value once the bytes it needs are present and its
sentinel before. The same prefixes are then re-run in a forked child with the prefix placed at the
very end of a mapped page followed by a PROT_NONE guard page, so any read past
``frame.shape[0]`` kills the child with SIGSEGV instead of silently reading garbage.
Finally, the optimized LLVM IR of a compiled batch loop is checked to be free of leftover calls
and of atomic NRT reference counting (the module's performance contract).
"""

from __future__ import annotations

import ctypes
import faulthandler
import ipaddress
import mmap
import multiprocessing
import random
import re
import signal
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from numba import njit
from numba.core import config as numba_config
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, IPOption_RR, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from micronf.packet import checksum as ck
from micronf.packet import flowhash as fh
from micronf.packet import headers as hd

NEVER = sys.maxsize  # "need" of a value that is never available, whatever the length


def frame_of(pkt: Packet | bytes) -> np.ndarray:
    return np.frombuffer(bytes(pkt), dtype=np.uint8).copy()


def ip_int(addr: str) -> int:
    return int(ipaddress.IPv4Address(addr))


# --------------------------------------------------------------------------- catalogue


def _catalogue() -> list[tuple[str, bytes]]:
    A, B = "10.1.2.3", "192.168.77.200"
    tcp_opts = [("MSS", 1460), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 2))]
    cases: list[tuple[str, Packet | bytes]] = [
        ("tcp", Ether() / IP(src=A, dst=B, ttl=33) / TCP(sport=40000, dport=443, flags="S") / b"data"),
        ("tcp_opts", Ether() / IP(src=A, dst=B) / TCP(sport=1, dport=65535, options=tcp_opts) / b"x"),
        ("tcp_empty", Ether() / IP(src=B, dst=A) / TCP(sport=80, dport=5555, flags="A")),
        ("udp", Ether() / IP(src=A, dst=B, tos=0xB8) / UDP(sport=4000, dport=4001) / Raw(b"q" * 10)),
        ("udp_empty", Ether() / IP(src=A, dst=B) / UDP(sport=7, dport=9)),
        ("icmp", Ether() / IP(src=A, dst=B) / ICMP(type=8, id=7, seq=1) / b"ping"),
        ("gre", Ether() / IP(src=A, dst=B, proto=47) / Raw(b"\x00" * 12)),
        ("vlan_tcp", Ether() / Dot1Q(vlan=100) / IP(src=A, dst=B) / TCP(sport=1234, dport=80) / b"GET"),
        ("vlan_udp", Ether() / Dot1Q(vlan=7, prio=5) / IP(src=B, dst=A) / UDP(sport=53000, dport=123)),
        ("vlan_icmp", Ether() / Dot1Q(vlan=4094) / IP(src=A, dst=B) / ICMP()),
        ("padded_udp", bytes(Ether() / IP(src=A, dst=B) / UDP(sport=10, dport=20)) + b"\x00" * 18),
        ("ipv6", Ether() / IPv6() / TCP(sport=1, dport=2)),
        ("vlan_ipv6", Ether() / Dot1Q(vlan=3) / IPv6() / UDP()),
        ("arp", Ether() / ARP(psrc=A, pdst=B)),
        ("vlan_arp", Ether() / Dot1Q(vlan=9) / ARP()),
        ("qinq", Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(src=A, dst=B) / TCP()),
        # malformed on purpose
        ("ethertype4_version6", Ether(type=0x0800) / IPv6() / TCP()),
        ("ihl4", Ether() / IP(src=A, dst=B, ihl=4) / TCP(sport=5, dport=6)),
        ("ihl15_short", Ether() / IP(src=A, dst=B, ihl=15) / UDP(sport=5, dport=6)),
        ("tcp_doff2", Ether() / IP(src=A, dst=B) / TCP(sport=9, dport=10, dataofs=2) / b"zz"),
        ("tcp_doff15_short", Ether() / IP(src=A, dst=B) / TCP(sport=9, dport=10, dataofs=15)),
    ]
    for n in range(10):  # IHL 6..15 via record-route options of growing size
        rr = IPOption_RR(routers=[f"172.16.0.{i}" for i in range(n)])
        cases.append((f"ihl{6 + n}_tcp", Ether() / IP(src=A, dst=B, options=[rr]) / TCP(sport=n + 1, dport=22)))
    cases.append(("ra_udp", Ether() / IP(src=A, dst=B, options=[IPOption(b"\x94\x04\x00\x00")]) / UDP()))
    cases.append(
        (
            "vlan_ihl15_udp",
            Ether()
            / Dot1Q(vlan=42)
            / IP(src=A, dst=B, options=[IPOption_RR(routers=["1.1.1.1"] * 9)])
            / UDP(sport=1111, dport=2222)
            / b"opt",
        )
    )
    for proto_name, l4 in (("udp", UDP(sport=3333, dport=4444)), ("tcp", TCP(sport=3333, dport=4444))):
        frags = fragment(IP(src=A, dst=B, id=99) / l4 / (b"F" * 100), fragsize=32)
        cases.append((f"frag_first_{proto_name}", Ether() / frags[0]))
        cases.append((f"frag_mid_{proto_name}", Ether() / frags[1]))
        cases.append((f"frag_last_{proto_name}", Ether() / frags[-1]))
    vfr = fragment(IP(src=B, dst=A, options=[IPOption_RR(routers=["2.2.2.2"])]) / UDP() / (b"v" * 64), 24)
    cases.append(("vlan_frag_first_opts", Ether() / Dot1Q(vlan=8) / vfr[0]))
    cases.append(("vlan_frag_last_opts", Ether() / Dot1Q(vlan=8) / vfr[-1]))
    return [(name, bytes(p)) for name, p in cases]


CATALOGUE = _catalogue()
CASE_IDS = [name for name, _ in CATALOGUE]
MALFORMED_IP = {"ethertype4_version6", "ihl4", "ihl15_short", "qinq"}
MALFORMED_TCP = {"tcp_doff2", "tcp_doff15_short"}
WELL_FORMED_V4 = [
    (name, raw) for name, raw in CATALOGUE if IP in Ether(raw) and name not in MALFORMED_IP | MALFORMED_TCP
]


# --------------------------------------------------------------------------- reference hash


def murmur3_32(key: bytes, seed: int = 0) -> int:
    """Textbook murmur3_x86_32 (independent reference for ``flow_hash``)."""
    c1, c2, m = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    nblocks = len(key) // 4
    for i in range(nblocks):
        k = int.from_bytes(key[4 * i : 4 * i + 4], "little")
        k = (k * c1) & m
        k = ((k << 15) | (k >> 17)) & m
        k = (k * c2) & m
        h ^= k
        h = ((h << 13) | (h >> 19)) & m
        h = (h * 5 + 0xE6546B64) & m
    tail = key[4 * nblocks :]
    k = 0
    for i, b in enumerate(tail):
        k |= b << (8 * i)
    if tail:
        k = (k * c1) & m
        k = ((k << 15) | (k >> 17)) & m
        k = (k * c2) & m
        h ^= k
    h ^= len(key)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    h ^= h >> 16
    return h


def ref_flow_hash(src: int, dst: int, proto: int, sport: int, dport: int) -> int:
    return murmur3_32(struct.pack("<IIII", src, dst, (sport << 16) | dport, proto))


def ref_flow_hash_symmetric(src: int, dst: int, proto: int, sport: int, dport: int) -> int:
    if (src, sport) > (dst, dport):
        src, dst, sport, dport = dst, src, dport, sport
    return ref_flow_hash(src, dst, proto, sport, dport)


def test_reference_murmur3_vectors() -> None:
    # Published murmur3_x86_32 vectors, so the reference itself is trustworthy.
    assert murmur3_32(b"") == 0
    assert murmur3_32(b"", 1) == 0x514E28B7
    assert murmur3_32(b"hello") == 0x248BFA47
    assert murmur3_32(b"Hello, world!", 1234) == 0xFAF6CDB3
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723


# --------------------------------------------------------------------------- probe / expectations


@dataclass(frozen=True)
class Hints:
    """Offsets taken from the *full* packet, passed to the accessors even on truncated prefixes."""

    l3: int
    hlen: int  # IHL*4 clamped to >= 20
    l4: int


def hints_of(raw: bytes) -> Hints:
    l3 = 18 if raw[12:14] == b"\x81\x00" else 14
    hlen = max(20, (raw[l3] & 0x0F) * 4) if len(raw) > l3 else 20
    return Hints(l3, hlen, l3 + hlen)


def probe(frame: np.ndarray, h: Hints) -> dict[str, Any]:
    """Every public helper applied to ``frame`` (results as plain Python values)."""
    out = np.full(5, -7, dtype=np.int64)
    ok = hd.five_tuple(frame, out)
    return {
        "eth_type": hd.eth_type(frame),
        "l3_offset": hd.l3_offset(frame),
        "ipv4_offset": hd.ipv4_offset(frame),
        "ihl": hd.ipv4_ihl_bytes(frame, h.l3),
        "total_length": hd.ipv4_total_length(frame, h.l3),
        "ttl": hd.ipv4_ttl(frame, h.l3),
        "proto": hd.ipv4_proto(frame, h.l3),
        "src": hd.ipv4_src(frame, h.l3),
        "dst": hd.ipv4_dst(frame, h.l3),
        "is_fragment": hd.ipv4_is_fragment(frame, h.l3),
        "frag_offset": hd.ipv4_frag_offset(frame, h.l3),
        "checksum": ck.ipv4_checksum(frame, h.l3, h.hlen),
        "checksum_ok": ck.ipv4_checksum_ok(frame, h.l3),
        "l4_offset": hd.l4_offset(frame),
        "l4_ports_ok": hd.l4_ports_ok(frame, h.l4),
        "l4_ports": tuple(hd.l4_ports(frame, h.l4)),
        "src_port": hd.src_port(frame),
        "dst_port": hd.dst_port(frame),
        "tcp_header_len": hd.tcp_header_len(frame, h.l4),
        "tcp_payload_offset": hd.tcp_payload_offset(frame),
        "udp_payload_offset": hd.udp_payload_offset(frame),
        "five_tuple": (ok, *(int(v) for v in out)),
        "five_tuple_values": tuple(hd.five_tuple_values(frame)),
        "frame_flow_hash": fh.frame_flow_hash(frame),
        "frame_flow_hash_symmetric": fh.frame_flow_hash_symmetric(frame),
    }


def expectations(raw: bytes) -> dict[str, tuple[int, Any, Any]]:
    """key -> (bytes needed, full-frame value, sentinel), derived from raw bytes with struct.

    A prefix of length k must give the value when k >= need and the sentinel otherwise.
    The full-frame values themselves are cross-checked against scapy by the other tests.
    """
    n = len(raw)
    h = hints_of(raw)
    l3 = h.l3

    def field(off: int, fmt: str) -> tuple[int, Any]:
        size = struct.calcsize(fmt)
        if off + size > n:
            return NEVER, None
        return off + size, struct.unpack_from(fmt, raw, off)[0]

    inner_type = field(l3 - 2, "!H")[1] if n >= l3 else None
    is_v4 = n >= l3 + 20 and inner_type == 0x0800 and raw[l3] >> 4 == 4
    ihl_raw = (raw[l3] & 0x0F) * 4 if n > l3 else 0
    hdr_ok = is_v4 and ihl_raw >= 20 and l3 + ihl_raw <= n
    frag_field = struct.unpack_from("!H", raw, l3 + 6)[0] & 0x1FFF if n >= l3 + 8 else 0
    proto = raw[l3 + 9] if n > l3 + 9 else -1
    l4 = l3 + ihl_raw
    first = frag_field == 0
    has_l4 = hdr_ok and first
    has_ports = has_l4 and proto in (6, 17) and l4 + 4 <= n

    e: dict[str, tuple[int, Any, Any]] = {}
    e["eth_type"] = (l3, inner_type, -1)
    e["l3_offset"] = (l3, l3, -1)
    e["ipv4_offset"] = (l3 + 20, l3 if is_v4 else -1, -1)
    e["ihl"] = (l3 + 1, ihl_raw, -1) if n > l3 else (NEVER, None, -1)
    e["total_length"] = (*field(l3 + 2, "!H"), -1)
    e["ttl"] = (*field(l3 + 8, "!B"), -1)
    e["proto"] = (*field(l3 + 9, "!B"), -1)
    e["src"] = (*field(l3 + 12, "!I"), -1)
    e["dst"] = (*field(l3 + 16, "!I"), -1)
    need_frag, flags_frag = field(l3 + 6, "!H")
    e["is_fragment"] = (need_frag, None if flags_frag is None else (flags_frag & 0x3FFF) != 0, False)
    e["frag_offset"] = (need_frag, None if flags_frag is None else (flags_frag & 0x1FFF) * 8, -1)
    if l3 + h.hlen <= n:
        hdr = bytearray(raw[l3 : l3 + h.hlen])
        hdr[10:12] = b"\x00\x00"
        e["checksum"] = (l3 + h.hlen, scapy_checksum(bytes(hdr)), -1)
    else:
        e["checksum"] = (NEVER, None, -1)
    if ihl_raw >= 20 and l3 + ihl_raw <= n:
        e["checksum_ok"] = (l3 + ihl_raw, scapy_checksum(raw[l3 : l3 + ihl_raw]) == 0, False)
    else:
        e["checksum_ok"] = (NEVER, None, False)
    e["l4_offset"] = (l3 + ihl_raw, l4 if has_l4 else -1, -1)
    e["l4_ports_ok"] = (h.l4 + 4, True, False) if h.l4 + 4 <= n else (NEVER, None, False)
    if h.l4 + 4 <= n:
        e["l4_ports"] = (h.l4 + 4, struct.unpack_from("!HH", raw, h.l4), (-1, -1))
    else:
        e["l4_ports"] = (NEVER, None, (-1, -1))
    sport, dport = struct.unpack_from("!HH", raw, l4) if has_ports else (0, 0)
    e["src_port"] = (l4 + 4, sport if has_ports else -1, -1)
    e["dst_port"] = (l4 + 4, dport if has_ports else -1, -1)
    thl = (raw[h.l4 + 12] >> 4) * 4 if h.l4 + 13 <= n else 0
    e["tcp_header_len"] = (h.l4 + thl, thl, -1) if thl >= 20 and h.l4 + thl <= n else (NEVER, None, -1)
    tcp_ok = has_l4 and proto == 6 and l4 == h.l4 and thl >= 20 and l4 + thl <= n
    e["tcp_payload_offset"] = (l4 + thl, l4 + thl if tcp_ok else -1, -1)
    udp_ok = has_l4 and proto == 17 and l4 + 8 <= n
    e["udp_payload_offset"] = (l4 + 8, l4 + 8 if udp_ok else -1, -1)
    if hdr_ok and (proto not in (6, 17) or not first or has_ports):
        src, dst = struct.unpack_from("!II", raw, l3 + 12)
        need = l4 + 4 if has_ports else l3 + ihl_raw
        tup = (src, dst, proto, sport, dport)
        e["five_tuple"] = (need, (True, *tup), (False, -7, -7, -7, -7, -7))
        e["five_tuple_values"] = (need, (True, *tup), (False, 0, 0, 0, 0, 0))
        fragment = flags_frag is not None and (flags_frag & 0x3FFF) != 0
        htup = (src, dst, proto, 0, 0) if fragment else tup  # every fragment hashes without ports
        e["frame_flow_hash"] = (need, ref_flow_hash(*htup), 0)
        e["frame_flow_hash_symmetric"] = (need, ref_flow_hash_symmetric(*htup), 0)
    else:
        e["five_tuple"] = (NEVER, None, (False, -7, -7, -7, -7, -7))
        e["five_tuple_values"] = (NEVER, None, (False, 0, 0, 0, 0, 0))
        e["frame_flow_hash"] = (NEVER, None, 0)
        e["frame_flow_hash_symmetric"] = (NEVER, None, 0)
    return e


def expected_at(exp: dict[str, tuple[int, Any, Any]], k: int) -> dict[str, Any]:
    return {key: (value if k >= need else sentinel) for key, (need, value, sentinel) in exp.items()}


# --------------------------------------------------------------------------- raw accessors


def test_rd_wr_roundtrip() -> None:
    rng = random.Random(1)
    buf = np.zeros(16, dtype=np.uint8)
    for _ in range(300):
        off = rng.randrange(0, 12)
        v16, v32 = rng.getrandbits(16), rng.getrandbits(32)
        hd.wr16(buf, off, v16)
        assert bytes(buf[off : off + 2]) == v16.to_bytes(2, "big")
        assert hd.rd16(buf, off) == v16
        hd.wr32(buf, off, v32)
        assert bytes(buf[off : off + 4]) == v32.to_bytes(4, "big")
        assert hd.rd32(buf, off) == v32
        assert isinstance(hd.rd32(buf, off), int)
    hd.wr32(buf, 0, 0x1_2345_6789)  # only the low 32 bits are stored
    assert hd.rd32(buf, 0) == 0x23456789
    hd.wr16(buf, 4, -1)
    assert hd.rd16(buf, 4) == 0xFFFF


def test_constants() -> None:
    assert (hd.ETH_HLEN, hd.VLAN_HLEN) == (14, 4)
    assert (hd.ETHERTYPE_IPV4, hd.ETHERTYPE_VLAN, hd.ETHERTYPE_IPV6, hd.ETHERTYPE_ARP) == (
        0x0800,
        0x8100,
        0x86DD,
        0x0806,
    )
    assert (hd.IPPROTO_TCP, hd.IPPROTO_UDP, hd.IPPROTO_ICMP) == (6, 17, 1)


# --------------------------------------------------------------------------- L2 / L3 against scapy


@pytest.mark.parametrize(("name", "raw"), CATALOGUE, ids=CASE_IDS)
def test_l2_against_scapy(name: str, raw: bytes) -> None:
    e = Ether(raw)
    f = frame_of(raw)
    vlan = e.type == 0x8100
    assert hd.l3_offset(f) == (18 if vlan else 14)
    assert hd.eth_type(f) == (e[Dot1Q].type if vlan else e.type)
    v4 = IP in e and e[IP].version == 4 and not (vlan and e[Dot1Q].type != 0x0800)
    assert (hd.ipv4_offset(f) >= 0) == v4
    if IPv6 in e or ARP in e:
        assert hd.ipv4_offset(f) == -1
        assert hd.l4_offset(f) == -1
        assert hd.five_tuple(f, np.zeros(5, dtype=np.int64)) is False
        assert fh.frame_flow_hash(f) == 0
        assert hd.src_port(f) == -1


@pytest.mark.parametrize(("name", "raw"), WELL_FORMED_V4, ids=[n for n, _ in WELL_FORMED_V4])
def test_ipv4_fields_against_scapy(name: str, raw: bytes) -> None:
    e = Ether(raw)
    ip = e[IP]
    f = frame_of(raw)
    l3 = hd.ipv4_offset(f)
    assert l3 == (18 if Dot1Q in e else 14)
    assert hd.ipv4_ihl_bytes(f, l3) == ip.ihl * 4
    assert hd.ipv4_total_length(f, l3) == ip.len
    assert hd.ipv4_ttl(f, l3) == ip.ttl
    assert hd.ipv4_proto(f, l3) == ip.proto
    assert hd.ipv4_src(f, l3) == ip_int(ip.src)
    assert hd.ipv4_dst(f, l3) == ip_int(ip.dst)
    assert hd.ipv4_is_fragment(f, l3) == (bool(ip.flags.MF) or ip.frag != 0)
    assert hd.ipv4_frag_offset(f, l3) == ip.frag * 8
    assert ck.ipv4_checksum_ok(f, l3) is True
    assert ck.ipv4_checksum(f, l3, ip.ihl * 4) == ip.chksum

    l4 = hd.l4_offset(f)
    if ip.frag != 0:
        assert l4 == -1
        assert hd.src_port(f) == -1
        assert hd.dst_port(f) == -1
        assert hd.tcp_payload_offset(f) == -1
        assert hd.udp_payload_offset(f) == -1
        return
    assert l4 == l3 + ip.ihl * 4
    l4pkt = ip.payload
    if isinstance(l4pkt, TCP | UDP):
        assert hd.l4_ports_ok(f, l4) is True
        assert hd.l4_ports(f, l4) == (l4pkt.sport, l4pkt.dport)
        assert hd.src_port(f) == l4pkt.sport
        assert hd.dst_port(f) == l4pkt.dport
    else:
        assert hd.src_port(f) == -1
        assert hd.dst_port(f) == -1
    if isinstance(l4pkt, TCP):
        assert hd.tcp_header_len(f, l4) == l4pkt.dataofs * 4
        assert hd.tcp_payload_offset(f) == l4 + l4pkt.dataofs * 4
        assert bytes(f[hd.tcp_payload_offset(f) :]) == bytes(l4pkt.payload)
        assert hd.udp_payload_offset(f) == -1
    elif isinstance(l4pkt, UDP):
        assert hd.udp_payload_offset(f) == l4 + 8
        assert hd.tcp_payload_offset(f) == -1
        assert bytes(f[l4 + 8 : l3 + ip.len]) == bytes(l4pkt.payload)[: ip.len - ip.ihl * 4 - 8]
    else:
        assert hd.tcp_payload_offset(f) == -1
        assert hd.udp_payload_offset(f) == -1


@pytest.mark.parametrize("n_routers", range(10))
def test_ip_options_ihl(n_routers: int) -> None:
    rr = IPOption_RR(routers=[f"9.9.9.{i}" for i in range(n_routers)])
    for vlan in (False, True):
        ip = IP(src="1.2.3.4", dst="4.3.2.1", options=[rr]) / UDP(sport=777, dport=888) / b"pl"
        p = Ether() / Dot1Q(vlan=5) / ip if vlan else Ether() / ip
        f = frame_of(p)
        parsed = Ether(bytes(p))[IP]
        assert parsed.ihl == 6 + n_routers
        l3 = 18 if vlan else 14
        assert hd.ipv4_ihl_bytes(f, l3) == parsed.ihl * 4
        assert hd.l4_offset(f) == l3 + parsed.ihl * 4
        assert (hd.src_port(f), hd.dst_port(f)) == (777, 888)
        assert hd.udp_payload_offset(f) == l3 + parsed.ihl * 4 + 8
        assert ck.ipv4_checksum_ok(f, l3)
        assert ck.ipv4_checksum(f, l3, parsed.ihl * 4) == parsed.chksum


def test_malformed_headers() -> None:
    ihl4 = frame_of(Ether() / IP(ihl=4) / TCP())
    assert hd.ipv4_offset(ihl4) == 14  # fixed header is there ...
    assert hd.ipv4_ihl_bytes(ihl4, 14) == 16
    assert hd.l4_offset(ihl4) == -1  # ... but IHL < 5 is invalid
    assert ck.ipv4_checksum_ok(ihl4, 14) is False
    assert hd.five_tuple(ihl4, np.zeros(5, dtype=np.int64)) is False
    assert ck.ipv4_checksum(ihl4, 14, 16) == -1

    ihl15 = frame_of(Ether() / IP(ihl=15) / UDP())  # claims 60 bytes, frame has 20 + 8
    assert hd.l4_offset(ihl15) == -1
    assert ck.ipv4_checksum_ok(ihl15, 14) is False
    assert hd.udp_payload_offset(ihl15) == -1

    v6_as_v4 = frame_of(Ether(type=0x0800) / IPv6() / TCP())
    assert hd.eth_type(v6_as_v4) == 0x0800
    assert hd.ipv4_offset(v6_as_v4) == -1

    doff2 = frame_of(Ether() / IP() / TCP(dataofs=2) / b"abcd")
    assert hd.l4_offset(doff2) == 34
    assert hd.tcp_header_len(doff2, 34) == -1
    assert hd.tcp_payload_offset(doff2) == -1
    assert (hd.src_port(doff2), hd.dst_port(doff2)) == (20, 80)  # ports are still readable

    qinq = frame_of(Ether() / Dot1Q() / Dot1Q() / IP() / TCP())
    assert hd.eth_type(qinq) == 0x8100
    assert hd.ipv4_offset(qinq) == -1

    frame = frame_of(Ether() / IP() / TCP())
    for fn in (hd.ipv4_ihl_bytes, hd.ipv4_total_length, hd.ipv4_ttl, hd.ipv4_proto, hd.ipv4_src, hd.ipv4_dst):
        assert fn(frame, -1) == -1  # a failed ipv4_offset chained in: no wrap-around read
    assert hd.ipv4_is_fragment(frame, -1) is False
    assert ck.ipv4_checksum(frame, -1, 20) == -1
    assert ck.ipv4_checksum_ok(frame, -1) is False
    assert hd.l4_ports(frame, -1) == (-1, -1)
    assert hd.tcp_header_len(frame, -1) == -1
    short_out = np.zeros(4, dtype=np.int64)
    assert hd.five_tuple(frame, short_out) is False
    assert not short_out.any()


# --------------------------------------------------------------------------- fragments


@pytest.mark.parametrize("vlan", [False, True])
@pytest.mark.parametrize("l4", ["udp", "tcp"])
def test_fragments(vlan: bool, l4: str) -> None:
    layer = UDP(sport=1000, dport=2000) if l4 == "udp" else TCP(sport=1000, dport=2000)
    proto = 17 if l4 == "udp" else 6
    frags = fragment(IP(src="8.8.4.4", dst="1.0.0.1") / layer / (b"P" * 200), fragsize=40)
    assert len(frags) >= 3
    l3 = 18 if vlan else 14
    out = np.zeros(5, dtype=np.int64)
    for i, fr in enumerate(frags):
        p = Ether() / Dot1Q(vlan=11) / fr if vlan else Ether() / fr
        parsed = Ether(bytes(p))[IP]
        f = frame_of(p)
        assert hd.ipv4_is_fragment(f, l3) is True
        assert hd.ipv4_frag_offset(f, l3) == parsed.frag * 8
        assert ck.ipv4_checksum_ok(f, l3)
        assert hd.five_tuple(f, out)
        assert tuple(out[:3]) == (ip_int("8.8.4.4"), ip_int("1.0.0.1"), proto)
        if i == 0:
            assert parsed.frag == 0 and parsed.flags.MF
            assert hd.l4_offset(f) == l3 + 20
            assert (hd.src_port(f), hd.dst_port(f)) == (1000, 2000)
            assert tuple(out[3:]) == (1000, 2000)
        else:
            assert parsed.frag > 0
            assert hd.l4_offset(f) == -1
            assert hd.src_port(f) == -1
            assert tuple(out[3:]) == (0, 0)
    last = Ether(bytes(Ether() / frags[-1]))[IP]
    assert not last.flags.MF


# --------------------------------------------------------------------------- checksums


@pytest.mark.parametrize(("name", "raw"), WELL_FORMED_V4, ids=[n for n, _ in WELL_FORMED_V4])
def test_checksum_matches_scapy(name: str, raw: bytes) -> None:
    e = Ether(raw)
    ip = e[IP]
    l3 = 18 if Dot1Q in e else 14
    hlen = ip.ihl * 4
    good = ip.chksum  # computed by scapy when the catalogue packet was built with chksum=None
    f = frame_of(raw)
    hd.wr16(f, l3 + 10, 0xBEEF)  # stored value must not influence the computation
    assert ck.ipv4_checksum(f, l3, hlen) == good
    assert ck.ipv4_checksum_ok(f, l3) is (good == 0xBEEF)
    for bad in {good ^ 0x0001, good ^ 0x8000, (good + 1) & 0xFFFF, 0}:
        if bad == good:
            continue
        p = ip.copy()
        p.chksum = bad
        fb = frame_of(Ether() / p)
        assert ck.ipv4_checksum_ok(fb, 14) is False
        assert ck.ipv4_checksum(fb, 14, hlen) == good
    # corrupting any header byte (options included) is detected
    for i in range(hlen):
        fc = frame_of(raw)
        fc[l3 + i] ^= 0x10
        assert ck.ipv4_checksum_ok(fc, l3) is False, i


def test_checksum_random_headers_vs_scapy() -> None:
    rng = random.Random(7)
    for _ in range(150):
        p = _random_ip(rng)
        built = IP(bytes(p))
        f = frame_of(bytes(Ether() / built))
        assert ck.ipv4_checksum(f, 14, built.ihl * 4) == built.chksum
        assert ck.ipv4_checksum_ok(f, 14)


def test_sum16_and_csum_finish_give_the_udp_checksum() -> None:
    """sum16 over any buffer plus a pseudo-header sum, finished, is the L4 checksum (what the generator writes)."""
    f = frame_of(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=7, dport=9) / b"odd")
    l4, l4_len = 34, len(f) - 34
    pseudo = sum(struct.unpack("!4H", bytes(f[26:34]))) + 17 + l4_len
    body = bytearray(bytes(f[l4:]))
    body[6:8] = b"\x00\x00"
    g = np.frombuffer(bytes(body), dtype=np.uint8)
    assert ck.csum_finish(ck.sum16(g, 0, l4_len, -1) + pseudo) == UDP(bytes(f[l4:])).chksum
    assert ck.fold16(0x1FFFE) == 0xFFFF and ck.csum_finish(0x1FFFE) == 0
    assert ck.sum16(g, 0, l4_len + 1, -1) == -1  # past the end


def test_checksum_odd_length_pads_with_zero() -> None:
    f = frame_of(Ether() / IP() / TCP())
    hdr = bytearray(bytes(f[14:35]))
    hdr[10:12] = b"\x00\x00"
    assert ck.ipv4_checksum(f, 14, 21) == scapy_checksum(bytes(hdr))


def ones_sum(words: list[int]) -> int:
    s = sum(words)
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def full_csum(words: list[int]) -> int:
    return ~ones_sum(words) & 0xFFFF


def _random_ip(rng: random.Random, ttl: int | None = None) -> Packet:
    n = rng.randrange(0, 10)
    opts = [IPOption_RR(routers=[str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(n)])]
    return IP(
        src=str(ipaddress.IPv4Address(rng.getrandbits(32))),
        dst=str(ipaddress.IPv4Address(rng.getrandbits(32))),
        ttl=rng.randrange(1, 256) if ttl is None else ttl,
        id=rng.getrandbits(16),
        tos=rng.getrandbits(8),
        flags=rng.choice([0, 2, 1]),
        frag=rng.choice([0, 0, rng.getrandbits(13)]),
        proto=rng.choice([1, 6, 17, 47, rng.getrandbits(8)]),
        options=opts if rng.random() < 0.5 else [],
    ) / Raw(b"\x00" * rng.randrange(0, 8))


def _ttl_decrement_via_update(f: np.ndarray, l3: int) -> None:
    old = hd.rd16(f, l3 + 8)
    f[l3 + 8] -= 1
    new = hd.rd16(f, l3 + 8)
    hd.wr16(f, l3 + 10, ck.csum_update16(hd.rd16(f, l3 + 10), old, new))


def _scapy_decremented_chksum(ip: Packet) -> int:
    q = IP(bytes(ip))
    q.ttl -= 1
    q.chksum = None
    return int(IP(bytes(q)).chksum)


def test_csum_update16_ttl_decrement_random() -> None:
    rng = random.Random(1624)
    for _ in range(500):
        ip = IP(bytes(_random_ip(rng)))
        vlan = rng.random() < 0.3
        raw = bytes(Ether() / Dot1Q(vlan=1) / ip) if vlan else bytes(Ether() / ip)
        l3 = 18 if vlan else 14
        f = frame_of(raw)
        _ttl_decrement_via_update(f, l3)
        expected = _scapy_decremented_chksum(ip)
        assert hd.rd16(f, l3 + 10) == expected
        assert ck.ipv4_checksum_ok(f, l3)
        assert ck.ipv4_checksum(f, l3, ip.ihl * 4) == expected


def test_csum_update16_rfc1624_corner_cases() -> None:
    # RFC 1624 section 4 example: eqn. 3 must give 0x0000 (eqn. 2 gives 0xFFFF)
    assert ck.csum_update16(0xDD2F, 0x5555, 0x3285) == 0x0000
    # identity update leaves a checksum unchanged (except -0, which never occurs in IPv4)
    for c in (0x0000, 0x0001, 0x7FFF, 0x8000, 0xFFFE):
        assert ck.csum_update16(c, 0x1234, 0x1234) == c
    # real IPv4 headers whose checksum is 0x0000 after (and before) the TTL decrement
    rng = random.Random(3)
    hits_after = hits_before = 0
    for _ in range(40):
        ttl = rng.randrange(2, 256)
        dst = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        for which in ("after", "before"):
            probe_ip = IP(src="10.0.0.1", dst=dst, ttl=ttl if which == "before" else ttl - 1, id=0, proto=17)
            hdr = bytearray(bytes(probe_ip)[:20])
            hdr[10:12] = b"\x00\x00"
            words = [int.from_bytes(hdr[i : i + 2], "big") for i in range(0, 20, 2)]
            ident = (0xFFFF - ones_sum(words)) & 0xFFFF  # makes the word sum 0xFFFF -> checksum 0
            ip = IP(bytes(IP(src="10.0.0.1", dst=dst, ttl=ttl, id=ident, proto=17)))
            after = _scapy_decremented_chksum(ip)
            if which == "before":
                assert ip.chksum == 0x0000
                hits_before += 1
            else:
                assert after == 0x0000
                hits_after += 1
            f = frame_of(Ether() / ip)
            _ttl_decrement_via_update(f, 14)
            assert hd.rd16(f, 24) == after
            assert ck.ipv4_checksum_ok(f, 14)
    assert hits_after == hits_before == 40


def test_csum_update16_word_blocks() -> None:
    """Generic one's-complement property on random word blocks rich in 0x0000/0xFFFF."""
    rng = random.Random(99)
    special = [0x0000, 0xFFFF, 0x0001, 0xFFFE, 0x8000, 0x7FFF]
    fixed = [
        ([0x0000, 0x0000], 0, 0x0001),  # HC 0xFFFF (all-zero data) -> nonzero
        ([0xFFFF, 0x0000], 1, 0x0000),  # stays sum 0xFFFF -> checksum 0x0000
        ([0x0001, 0xFFFE], 0, 0x0000),  # sum becomes 0xFFFE
        ([0xFFFF], 0, 0x0001),
        ([0x0001], 0, 0xFFFF),
    ]
    cases = list(fixed)
    for _ in range(1000):
        words = [rng.choice(special) if rng.random() < 0.5 else rng.getrandbits(16) for _ in range(10)]
        i = rng.randrange(len(words))
        new = rng.choice(special) if rng.random() < 0.5 else rng.getrandbits(16)
        cases.append((words, i, new))
    checked = 0
    for words, i, new in cases:
        after = list(words)
        after[i] = new
        if not any(after):
            continue  # all-zero data: +0/-0 ambiguity (cannot happen for an IPv4 header)
        got = ck.csum_update16(full_csum(words), words[i], new)
        assert got == full_csum(after), (words, i, new)
        checked += 1
    assert checked > 900


# --------------------------------------------------------------------------- 5-tuple & hashing


@pytest.mark.parametrize(("name", "raw"), CATALOGUE, ids=CASE_IDS)
def test_five_tuple_against_scapy(name: str, raw: bytes) -> None:
    e = Ether(raw)
    f = frame_of(raw)
    out = np.full(5, -3, dtype=np.int64)
    ok = hd.five_tuple(f, out)
    if name in MALFORMED_IP or IP not in e:
        assert ok is False
        assert (out == -3).all()
        assert fh.frame_flow_hash(f) == 0
        return
    ip = e[IP]
    assert ok is True
    l4pkt = ip.payload
    ported = ip.frag == 0 and isinstance(l4pkt, TCP | UDP)
    expected = (
        ip_int(ip.src),
        ip_int(ip.dst),
        ip.proto,
        l4pkt.sport if ported else 0,
        l4pkt.dport if ported else 0,
    )
    assert tuple(int(v) for v in out) == expected
    assert hd.five_tuple_values(f) == (True, *expected)
    fragment = ip.frag != 0 or bool(ip.flags.MF)
    hashed = (*expected[:3], 0, 0) if fragment else expected  # all fragments of a datagram hash alike
    assert fh.frame_flow_hash(f) == ref_flow_hash(*hashed)
    assert fh.frame_flow_hash_symmetric(f) == ref_flow_hash_symmetric(*hashed)


def test_flow_hash_matches_murmur3_reference() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        t = (
            rng.getrandbits(32),
            rng.getrandbits(32),
            rng.getrandbits(8),
            rng.getrandbits(16),
            rng.getrandbits(16),
        )
        h = fh.flow_hash(*t)
        assert h == ref_flow_hash(*t)
        assert 0 <= h < 2**32
    # sentinels / out-of-range inputs are masked to the field widths
    assert fh.flow_hash(-1, -1, -1, -1, -1) == ref_flow_hash(0xFFFFFFFF, 0xFFFFFFFF, 0xFF, 0xFFFF, 0xFFFF)


def test_flow_hash_symmetric() -> None:
    rng = random.Random(11)
    asym = 0
    for _ in range(3000):
        a, b = rng.getrandbits(32), rng.getrandbits(32)
        if rng.random() < 0.1:
            b = a  # same host, different ports: ports decide the order
        proto, x, y = rng.choice([6, 17, 1]), rng.getrandbits(16), rng.getrandbits(16)
        fwd = fh.flow_hash_symmetric(a, b, proto, x, y)
        assert fwd == fh.flow_hash_symmetric(b, a, proto, y, x)
        assert fwd == ref_flow_hash_symmetric(a, b, proto, x, y)
        asym += fh.flow_hash(a, b, proto, x, y) != fh.flow_hash(b, a, proto, y, x)
    assert asym > 2900  # the directed hash does distinguish directions

    req = frame_of(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=5000, dport=80))
    rep = frame_of(Ether() / Dot1Q(vlan=3) / IP(src="2.2.2.2", dst="1.1.1.1") / TCP(sport=80, dport=5000))
    assert fh.frame_flow_hash_symmetric(req) == fh.frame_flow_hash_symmetric(rep)
    assert fh.frame_flow_hash(req) != fh.frame_flow_hash(rep)
    other = frame_of(Ether() / IP(src="2.2.2.2", dst="1.1.1.1") / UDP(sport=80, dport=5000))
    assert fh.frame_flow_hash_symmetric(other) != fh.frame_flow_hash_symmetric(rep)


def _bucket_spread(hashes: list[int], shift: int) -> tuple[int, int]:
    counts = [0] * 64
    for h in hashes:
        counts[(h >> shift) & 63] += 1
    return min(counts), max(counts)


@pytest.mark.parametrize("fn", [fh.flow_hash, fh.flow_hash_symmetric], ids=["directed", "symmetric"])
def test_flow_hash_spread(fn: Callable[..., int]) -> None:
    rng = random.Random(64)
    random_flows = [
        (
            rng.getrandbits(32),
            rng.getrandbits(32),
            rng.choice([6, 17]),
            rng.getrandbits(16),
            rng.getrandbits(16),
        )
        for _ in range(10_000)
    ]
    # low-entropy flows: one client subnet, sequential source ports, one server
    base = ip_int("10.0.0.0")
    sequential = [(base + (i >> 8), ip_int("10.0.1.1"), 6, 1024 + (i & 0xFF), 80) for i in range(10_000)]
    for flows in (random_flows, sequential):
        hashes = [fn(*t) for t in flows]
        assert len(set(hashes)) > 9_980  # essentially no collisions in 32 bits
        for shift in (0, 13, 26):  # low, middle and high bits all usable as bucket index
            lo, hi = _bucket_spread(hashes, shift)
            assert lo > 0
            assert hi / lo < 1.8, (shift, lo, hi)


def test_flow_hash_avalanche() -> None:
    rng = random.Random(2020)
    widths = (32, 32, 8, 16, 16)
    total = flips = 0
    per_bit_min = 32.0
    per_bit_max = 0.0
    tuples = [[rng.getrandbits(w) for w in widths] for _ in range(100)]
    for field_idx, width in enumerate(widths):
        for bit in range(width):
            changed = 0
            for t in tuples:
                u = list(t)
                u[field_idx] ^= 1 << bit
                changed += bin(fh.flow_hash(*t) ^ fh.flow_hash(*u)).count("1")
            avg = changed / len(tuples)
            per_bit_min, per_bit_max = min(per_bit_min, avg), max(per_bit_max, avg)
            total += changed
            flips += len(tuples)
    assert 15.5 < total / flips < 16.5
    assert per_bit_min > 13.0 and per_bit_max < 19.0


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(("name", "raw"), CATALOGUE, ids=CASE_IDS)
def test_truncated_prefixes(name: str, raw: bytes) -> None:
    exp = expectations(raw)
    hints = hints_of(raw)
    full = frame_of(raw)
    assert probe(full, hints) == expected_at(exp, len(raw))
    # slice views and exact-size copies of every prefix
    for k in range(len(raw) + 1):
        want = expected_at(exp, k)
        assert probe(full[:k], hints) == want, k
        assert probe(frame_of(raw[:k]), hints) == want, k


def test_catalogue_exercises_every_threshold() -> None:
    """The catalogue must make each helper switch from sentinel to value somewhere."""
    switched = {key: False for key in expectations(CATALOGUE[0][1])}
    for _, raw in CATALOGUE:
        for key, (need, value, sentinel) in expectations(raw).items():
            if need <= len(raw) and value != sentinel:
                switched[key] = True
    assert all(switched.values()), [k for k, v in switched.items() if not v]


PROT_NONE = 0


def _guard_child(conn: Any, cases: list[tuple[bytes, Hints]], overrun: int) -> None:
    """Run ``probe`` on each prefix placed flush against a PROT_NONE page; send the results."""
    if overrun:
        faulthandler.disable()  # the control run is expected to crash: no traceback noise
    page = mmap.PAGESIZE
    buf = mmap.mmap(-1, 2 * page)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(ctypes.c_void_p(addr + page), page, PROT_NONE) != 0:
        conn.send(("mprotect failed", ctypes.get_errno()))
        return
    results = []
    for raw, hints in cases:
        per_case = []
        for k in range(len(raw) + 1):
            buf[page - k : page] = raw[:k]
            frame = np.frombuffer(buf, dtype=np.uint8, count=k + overrun, offset=page - k)
            per_case.append(probe(frame, hints))
        results.append(per_case)
        conn.send(("progress", len(results)))
    conn.send(("done", results))


def _run_guarded(cases: list[tuple[bytes, Hints]], overrun: int) -> tuple[int | None, list[Any]]:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_guard_child, args=(child, cases, overrun))
    proc.start()
    child.close()
    messages = []
    try:
        while True:
            messages.append(parent.recv())
    except EOFError:
        pass
    proc.join(60)
    return proc.exitcode, messages


@pytest.mark.skipif(sys.platform != "linux", reason="needs fork + mprotect")
def test_truncated_prefixes_guard_page() -> None:
    cases = [(raw, hints_of(raw)) for _, raw in CATALOGUE]
    exitcode, messages = _run_guarded(cases, overrun=0)
    finished = sum(1 for m in messages if m[0] == "progress")
    crashed_on = CATALOGUE[finished][0] if finished < len(CATALOGUE) else "?"
    assert exitcode == 0, f"guarded child died (exit {exitcode}) on case {crashed_on!r}: out-of-bounds read?"
    assert messages and messages[-1][0] == "done", messages[-1:]
    results = messages[-1][1]
    assert len(results) == len(CATALOGUE)
    for (name, raw), per_case in zip(CATALOGUE, results, strict=True):
        exp = expectations(raw)
        assert len(per_case) == len(raw) + 1
        for k, got in enumerate(per_case):
            assert got == expected_at(exp, k), (name, k)


@pytest.mark.skipif(sys.platform != "linux", reason="needs fork + mprotect")
def test_guard_page_detects_overread() -> None:
    """Control: the harness really faults when a frame's bytes run into the guard page."""
    raw = bytes(Ether() / IP() / TCP())
    # overrun=1 makes the array one byte longer than the mapped data, so the parsers legitimately
    # touch the guard page once the prefix is long enough: the child must die with SIGSEGV.
    exitcode, messages = _run_guarded([(raw, hints_of(raw))], overrun=1)
    assert exitcode == -signal.SIGSEGV, (exitcode, messages[-1:])


# --------------------------------------------------------------------------- compiled code quality

_NRT_CALL = re.compile(r"call void @NRT_(incref|decref)\(")


def _function_ir(dispatcher: Any) -> str:
    """Optimized LLVM IR of the (single) compiled overload itself, without its Python wrapper."""
    assert len(dispatcher.signatures) >= 1
    cres = dispatcher.overloads[dispatcher.signatures[0]]
    module = cres.library.get_llvm_str()
    name = cres.fndesc.mangled_name
    for block in re.split(r"\ndefine ", module):
        header = block.split("{", 1)[0]
        if f"@{name}(" in header:
            return block
    raise AssertionError(f"{name} not found in the module")


def _sample_calls() -> list[tuple[str, tuple[Any, ...]]]:
    f = frame_of(Ether() / IP(src="1.2.3.4", dst="5.6.7.8") / TCP(sport=1, dport=2) / b"x")
    return [
        ("rd16", (f, 1)),
        ("rd32", (f, 1)),
        ("wr16", (f.copy(), 1, 5)),
        ("wr32", (f.copy(), 1, 5)),
        ("eth_type", (f,)),
        ("l3_offset", (f,)),
        ("ipv4_offset", (f,)),
        ("ipv4_ihl_bytes", (f, 14)),
        ("ipv4_total_length", (f, 14)),
        ("ipv4_ttl", (f, 14)),
        ("ipv4_proto", (f, 14)),
        ("ipv4_src", (f, 14)),
        ("ipv4_dst", (f, 14)),
        ("ipv4_is_fragment", (f, 14)),
        ("ipv4_frag_offset", (f, 14)),
        ("ipv4_checksum", (f, 14, 20)),
        ("ipv4_checksum_ok", (f, 14)),
        ("csum_update16", (1, 2, 3)),
        ("l4_offset", (f,)),
        ("l4_ports_ok", (f, 34)),
        ("l4_ports", (f, 34)),
        ("src_port", (f,)),
        ("dst_port", (f,)),
        ("tcp_header_len", (f, 34)),
        ("tcp_payload_offset", (f,)),
        ("udp_payload_offset", (f,)),
        ("five_tuple", (f, np.zeros(5, dtype=np.int64))),
        ("five_tuple_values", (f,)),
        ("flow_hash", (1, 2, 3, 4, 5)),
        ("flow_hash_symmetric", (1, 2, 3, 4, 5)),
        ("frame_flow_hash", (f,)),
        ("frame_flow_hash_symmetric", (f,)),
        ("jump_hash", (12345, 7)),
        ("fold16", (0x1FFFE,)),
        ("sum16", (f, 14, 20, -1)),
        ("csum_finish", (0x1FFFE,)),
    ]


_PACKET_MODULES = (hd, ck, fh)


def _helper(name: str) -> Any:
    """The public helper ``name`` of the header, checksum or flow-hash module."""
    (fn,) = [getattr(m, name) for m in _PACKET_MODULES if name in m.__all__]
    return fn


def test_public_api_is_covered() -> None:
    public = {name for m in _PACKET_MODULES for name in m.__all__ if not name.isupper()}
    assert public == {name for name, _ in _sample_calls()}


def _refcounting_helpers() -> list[str]:
    """Diagnosis for a failure below: helpers whose own compiled body refcounts an array.

    Recompiles each helper's Python source afresh (inspection of cache-loaded code is disabled).
    """
    culprits = []
    for name, args in _sample_calls():
        fresh = njit(_helper(name).py_func)
        fresh(*args)
        if _NRT_CALL.search(_function_ir(fresh)):
            culprits.append(name)
    return culprits


@njit
def _batch_all(frames: np.ndarray, lens: np.ndarray, out5: np.ndarray, acc: np.ndarray) -> None:
    for i in range(frames.shape[0]):
        f = frames[i, : lens[i]]
        l3 = hd.ipv4_offset(f)
        l4 = hd.l4_offset(f)
        sp, dp = hd.l4_ports(f, l4)
        ok, a, b, p, x, y = hd.five_tuple_values(f)
        s = hd.eth_type(f) + hd.l3_offset(f) + hd.ipv4_ihl_bytes(f, l3) + hd.ipv4_total_length(f, l3)
        s += hd.ipv4_ttl(f, l3) + hd.ipv4_proto(f, l3) + hd.ipv4_src(f, l3) + hd.ipv4_dst(f, l3)
        s += hd.ipv4_frag_offset(f, l3) + hd.ipv4_is_fragment(f, l3) + ck.ipv4_checksum(f, l3, 20)
        s += hd.l4_ports_ok(f, l4) + sp + dp + hd.src_port(f) + hd.dst_port(f) + hd.tcp_header_len(f, l4)
        s += hd.tcp_payload_offset(f) + hd.udp_payload_offset(f) + hd.five_tuple(f, out5)
        s += ok + a + b + p + x + y + fh.frame_flow_hash(f) + fh.frame_flow_hash_symmetric(f)
        if ck.ipv4_checksum_ok(f, l3):
            old = hd.rd16(f, l3 + 8)
            hd.wr16(f, l3 + 8, old - 0x100)
            hd.wr16(f, l3 + 10, ck.csum_update16(hd.rd16(f, l3 + 10), old, hd.rd16(f, l3 + 8)))
        acc[i] = s + hd.rd32(f, 0)


@pytest.mark.skipif(numba_config.DISABLE_JIT, reason="inspects compiled code")
def test_batch_loop_fully_inlined_without_refcounting() -> None:
    """A compiled batch loop over frame slices keeps neither calls into headers nor NRT refcounts."""
    raw = bytes(Ether() / IP(src="1.2.3.4", dst="5.6.7.8") / TCP(sport=1, dport=2) / b"x")
    frames = np.zeros((3, 128), dtype=np.uint8)
    frames[:, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    lens = np.array([len(raw), 20, 0], dtype=np.int64)
    acc = np.zeros(3, dtype=np.int64)
    _batch_all(frames, lens, np.zeros(5, dtype=np.int64), acc)
    assert frames[0, 22] == 63  # TTL decremented in place ...
    assert ck.ipv4_checksum_ok(frames[0, : len(raw)], 14)  # ... with a valid checksum
    ir = _function_ir(_batch_all)
    if _NRT_CALL.search(ir):
        pytest.fail(f"NRT refcounting left in the batch loop; helpers at fault: {_refcounting_helpers()}")
    leftover = re.findall(r"call [^@]*@(_ZN7micronf6packet\d+(?:headers|checksum|flowhash)\w+)", ir)
    assert not leftover, f"not inlined: {sorted(set(leftover))}"
