"""Packet header parsing and rewriting helpers, callable from numba code.

Why: every network function in a chain parses the same few headers (Ethernet, optional 802.1Q,
IPv4, TCP/UDP) inside a compiled batch loop. These helpers are small
``@njit(cache=True, nogil=True, forceinline=True)`` functions that LLVM inlines into the caller,
so using them costs about as much as hand-written offset arithmetic, while keeping every bounds
check in one audited place.

Conventions
-----------
* ``frame`` is a 1-D ``np.uint8`` array holding exactly one frame: its length is
  ``frame.shape[0]``. numba does no bounds checking, so every helper that derives an offset from
  packet contents checks explicitly that the bytes it reads lie inside ``frame`` and never reads
  past ``frame.shape[0]`` (nor before index 0: negative offsets are rejected, since numba would
  silently wrap them around to the end of the array).
* Failure is reported by a sentinel, never an exception: ``-1`` for offsets, lengths and field
  values, ``False`` for predicates, ``(-1, -1)`` for port pairs. A field value is never negative,
  so ``-1`` is unambiguous. Offsets returned by one helper (``l3``, ``l4``) may be passed straight to
  the next one; passing ``-1`` yields the sentinel again.
* The raw accessors ``rd16``/``rd32``/``wr16``/``wr32`` are the only exceptions: they do *no*
  bounds check (the caller has already validated the offset) so they stay a single load/store.
* All arithmetic is done in ``int64`` with explicit masks (``& 0xFFFF``, ``& 0xFFFFFFFF``). Bytes
  are widened with ``int(np.int64(b))``: in numba ``int(uint8)`` is typed ``uint64``, and mixing
  ``uint64`` with ``int64`` silently produces ``float64``. Every integer result is an ``int64``
  (a plain ``int`` when called from Python).
* Only IPv4 is parsed past L3; IPv6/ARP/other EtherTypes yield the sentinels. At most one 802.1Q
  tag (TPID 0x8100) is skipped. Ports are reported for TCP and UDP only, and only when the packet
  is unfragmented or is the first fragment (fragment offset 0); length fields in the IP header
  (total length) are *not* used to bound parsing, only the real frame length is (TSO/GRO captures
  carry a total length of 0).

Ports: ``l4_ports(frame, l4)`` returns ``(sport, dport)`` (``(-1, -1)`` when the 4 bytes do not
fit), ``l4_ports_ok(frame, l4)`` says whether they fit, and ``src_port(frame)``/``dst_port(frame)``
parse the whole frame and return ``-1`` when the packet has no (visible) TCP/UDP ports.

Performance rule (why the code reads bytes "speculatively"): numba increfs an array argument on
entry and decrefs it on exit (atomic NRT operations, slower than the parsing itself) and relies
on an LLVM pass to delete the pair; that pass gives up as soon as the array is used inside
branchy control flow. So a function taking ``frame`` first reads every byte it may need through
bounds-checked readers (``_rd8_at``/``_rd16_at``/``_rd32_at``, which return -1 when the bytes are
absent), unconditionally, and only then branches on the resulting plain integers. The tests
assert that the compiled IR of every helper, and of a batch loop calling them, contains no NRT
reference counting and no remaining calls.

Checksums are in :mod:`micronf.packet.checksum`, flow hashes in :mod:`micronf.packet.flowhash`;
both follow the rules above.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from micronf.packet.jit import inline_kernel as _njit

__all__ = [
    "ETHERTYPE_ARP",
    "ETHERTYPE_IPV4",
    "ETHERTYPE_IPV6",
    "ETHERTYPE_VLAN",
    "ETH_HLEN",
    "IPPROTO_ICMP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "IPV4_MIN_HLEN",
    "TCP_MIN_HLEN",
    "UDP_HLEN",
    "VLAN_HLEN",
    "dst_port",
    "eth_type",
    "five_tuple",
    "five_tuple_values",
    "ipv4_dst",
    "ipv4_frag_offset",
    "ipv4_ihl_bytes",
    "ipv4_is_fragment",
    "ipv4_offset",
    "ipv4_proto",
    "ipv4_src",
    "ipv4_total_length",
    "ipv4_ttl",
    "l3_offset",
    "l4_offset",
    "l4_ports",
    "l4_ports_ok",
    "rd16",
    "rd32",
    "src_port",
    "tcp_header_len",
    "tcp_payload_offset",
    "udp_payload_offset",
    "wr16",
    "wr32",
]

ETH_HLEN = 14
VLAN_HLEN = 4
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_ARP = 0x0806
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV4_MIN_HLEN = 20
TCP_MIN_HLEN = 20
UDP_HLEN = 8

Frame = npt.NDArray[np.uint8]


# --------------------------------------------------------------------------- raw accessors


@_njit
def _u8(frame: Frame, off: int) -> int:
    """``frame[off]`` widened to int64 (``int(uint8)`` would be ``uint64`` in numba). No check."""
    return int(np.int64(frame[off]))


@_njit
def rd16(frame: Frame, off: int) -> int:
    """Big-endian 16-bit read of ``frame[off:off+2]``; the caller guarantees the bytes exist."""
    return (_u8(frame, off) << 8) | _u8(frame, off + 1)


@_njit
def rd32(frame: Frame, off: int) -> int:
    """Big-endian 32-bit read (as a non-negative int); the caller guarantees the bytes exist."""
    return (_u8(frame, off) << 24) | (_u8(frame, off + 1) << 16) | (_u8(frame, off + 2) << 8) | _u8(frame, off + 3)


@_njit
def wr16(frame: Frame, off: int, value: int) -> None:
    """Store the low 16 bits of ``value`` big-endian at ``off``; the caller guarantees bounds."""
    frame[off] = (value >> 8) & 0xFF
    frame[off + 1] = value & 0xFF


@_njit
def wr32(frame: Frame, off: int, value: int) -> None:
    """Store the low 32 bits of ``value`` big-endian at ``off``; the caller guarantees bounds."""
    frame[off] = (value >> 24) & 0xFF
    frame[off + 1] = (value >> 16) & 0xFF
    frame[off + 2] = (value >> 8) & 0xFF
    frame[off + 3] = value & 0xFF


@_njit
def _fits(frame: Frame, off: int, n: int) -> bool:
    """True when ``frame[off:off+n]`` lies entirely inside the frame (and ``off >= 0``)."""
    size = frame.shape[0]
    return off >= 0 and off + n <= size


@_njit
def _rd8_at(frame: Frame, base: int, rel: int) -> int:
    """``frame[base + rel]`` (``rel >= 0``), or -1 if ``base < 0`` or the byte is past the end."""
    off = base + rel
    if base < 0 or off + 1 > frame.shape[0]:
        return -1
    return _u8(frame, off)


@_njit
def _rd16_at(frame: Frame, base: int, rel: int) -> int:
    """Big-endian 16-bit value at ``base + rel``, or -1 if ``base < 0`` or it is truncated."""
    off = base + rel
    if base < 0 or off + 2 > frame.shape[0]:
        return -1
    return rd16(frame, off)


@_njit
def _rd32_at(frame: Frame, base: int, rel: int) -> int:
    """Big-endian 32-bit value at ``base + rel``, or -1 if ``base < 0`` or it is truncated."""
    off = base + rel
    if base < 0 or off + 4 > frame.shape[0]:
        return -1
    return rd32(frame, off)


# --------------------------------------------------------------------------- L2


@_njit
def eth_type(frame: Frame) -> int:
    """EtherType of the payload, looking through at most one 802.1Q tag; -1 if truncated.

    A double-tagged frame reports the inner TPID (0x8100), so it is never mistaken for IPv4.
    """
    outer = _rd16_at(frame, 0, 12)
    inner = _rd16_at(frame, 0, 16)  # -1 when the tag is cut off
    if outer == ETHERTYPE_VLAN:
        return inner
    return outer


@_njit
def l3_offset(frame: Frame) -> int:
    """Offset of the L3 header: 14, or 18 behind one 802.1Q tag; -1 if L2 header is truncated."""
    outer = _rd16_at(frame, 0, 12)
    n = frame.shape[0]
    if outer < 0:
        return -1
    if outer != ETHERTYPE_VLAN:
        return ETH_HLEN
    if n < ETH_HLEN + VLAN_HLEN:
        return -1
    return ETH_HLEN + VLAN_HLEN


# --------------------------------------------------------------------------- IPv4


@_njit
def ipv4_offset(frame: Frame) -> int:
    """L3 offset if this is IPv4 with the 20-byte fixed header present, else -1.

    Requires EtherType 0x0800 *and* version nibble 4 (a mislabelled frame is rejected). Options
    are not checked here; ``ipv4_ihl_bytes``/``l4_offset`` validate the full header length.
    """
    l3 = l3_offset(frame)
    et = eth_type(frame)
    ver_ihl = _rd8_at(frame, l3, 0)
    n = frame.shape[0]
    if l3 < 0 or et != ETHERTYPE_IPV4 or l3 + IPV4_MIN_HLEN > n or (ver_ihl >> 4) != 4:
        return -1
    return l3


@_njit
def ipv4_ihl_bytes(frame: Frame, l3: int) -> int:
    """IPv4 header length in bytes (IHL*4, may be an invalid value < 20); -1 if truncated."""
    ver_ihl = _rd8_at(frame, l3, 0)
    if ver_ihl < 0:
        return -1
    return (ver_ihl & 0x0F) * 4


@_njit
def ipv4_total_length(frame: Frame, l3: int) -> int:
    """IPv4 total length field (header + payload as claimed by the sender); -1 if truncated."""
    return _rd16_at(frame, l3, 2)


@_njit
def ipv4_ttl(frame: Frame, l3: int) -> int:
    """IPv4 time-to-live; -1 if truncated."""
    return _rd8_at(frame, l3, 8)


@_njit
def ipv4_proto(frame: Frame, l3: int) -> int:
    """IPv4 protocol number (6 TCP, 17 UDP, 1 ICMP, ...); -1 if truncated."""
    return _rd8_at(frame, l3, 9)


@_njit
def ipv4_src(frame: Frame, l3: int) -> int:
    """IPv4 source address as an unsigned 32-bit value (host integer); -1 if truncated."""
    return _rd32_at(frame, l3, 12)


@_njit
def ipv4_dst(frame: Frame, l3: int) -> int:
    """IPv4 destination address as an unsigned 32-bit value (host integer); -1 if truncated."""
    return _rd32_at(frame, l3, 16)


@_njit
def ipv4_frag_offset(frame: Frame, l3: int) -> int:
    """Fragment offset in *bytes* (field * 8); -1 if truncated."""
    flags_frag = _rd16_at(frame, l3, 6)
    if flags_frag < 0:
        return -1
    return (flags_frag & 0x1FFF) * 8


@_njit
def ipv4_is_fragment(frame: Frame, l3: int) -> bool:
    """True if the packet is a fragment (MF flag set or offset != 0); False if truncated."""
    flags_frag = _rd16_at(frame, l3, 6)
    return flags_frag >= 0 and (flags_frag & 0x3FFF) != 0


# --------------------------------------------------------------------------- L4


@_njit
def _l4_from_l3(frame: Frame, l3: int) -> int:
    """``l4_offset`` given ``ipv4_offset(frame)`` (which may be -1)."""
    hlen = ipv4_ihl_bytes(frame, l3)
    flags_frag = _rd16_at(frame, l3, 6)
    n = frame.shape[0]
    if l3 < 0 or hlen < IPV4_MIN_HLEN or l3 + hlen > n or flags_frag < 0 or (flags_frag & 0x1FFF) != 0:
        return -1
    return l3 + hlen


@_njit
def l4_offset(frame: Frame) -> int:
    """Offset of the L4 header of an IPv4 packet, or -1.

    -1 unless: IPv4, IHL >= 5, the whole IHL*4-byte header is inside the frame, and the packet is
    unfragmented or the first fragment (a non-first fragment carries no L4 header).
    """
    return _l4_from_l3(frame, ipv4_offset(frame))


@_njit
def l4_ports_ok(frame: Frame, l4: int) -> bool:
    """True if the 4 port bytes at ``l4`` (source and destination port) are inside the frame."""
    return _fits(frame, l4, 4)


@_njit
def l4_ports(frame: Frame, l4: int) -> tuple[int, int]:
    """``(src_port, dst_port)`` read at ``l4`` (TCP/UDP layout); ``(-1, -1)`` if they don't fit.

    Does not look at the protocol: use ``src_port``/``dst_port`` or ``five_tuple`` for that.
    """
    sport = _rd16_at(frame, l4, 0)
    dport = _rd16_at(frame, l4, 2)
    if dport < 0:  # implies the whole 4 bytes do not fit (or l4 < 0)
        return (-1, -1)
    return (sport, dport)


@_njit
def _frame_ports(frame: Frame) -> tuple[int, int]:
    """(sport, dport) of a TCP/UDP frame with visible ports, else (-1, -1)."""
    l3 = ipv4_offset(frame)
    l4 = _l4_from_l3(frame, l3)
    proto = _rd8_at(frame, l3, 9)
    sport, dport = l4_ports(frame, l4)
    if l4 < 0 or proto not in (IPPROTO_TCP, IPPROTO_UDP):
        return (-1, -1)
    return (sport, dport)


@_njit
def src_port(frame: Frame) -> int:
    """TCP/UDP source port of the frame; -1 if not TCP/UDP, a non-first fragment, or truncated."""
    return _frame_ports(frame)[0]


@_njit
def dst_port(frame: Frame) -> int:
    """TCP/UDP destination port; -1 if not TCP/UDP, a non-first fragment, or truncated."""
    return _frame_ports(frame)[1]


@_njit
def tcp_header_len(frame: Frame, l4: int) -> int:
    """TCP header length in bytes (data offset * 4); -1 if data offset < 5 or header truncated."""
    doff = _rd8_at(frame, l4, 12)
    n = frame.shape[0]
    thl = (doff >> 4) * 4
    if doff < 0 or thl < TCP_MIN_HLEN or l4 + thl > n:
        return -1
    return thl


@_njit
def tcp_payload_offset(frame: Frame) -> int:
    """Offset of the TCP payload (may equal the frame length); -1 if not TCP or truncated."""
    l3 = ipv4_offset(frame)
    l4 = _l4_from_l3(frame, l3)
    proto = _rd8_at(frame, l3, 9)
    thl = tcp_header_len(frame, l4)
    if l4 < 0 or proto != IPPROTO_TCP or thl < 0:
        return -1
    return l4 + thl


@_njit
def udp_payload_offset(frame: Frame) -> int:
    """Offset of the UDP payload (may equal the frame length); -1 if not UDP or truncated."""
    l3 = ipv4_offset(frame)
    l4 = _l4_from_l3(frame, l3)
    proto = _rd8_at(frame, l3, 9)
    n = frame.shape[0]
    if l4 < 0 or proto != IPPROTO_UDP or l4 + UDP_HLEN > n:
        return -1
    return l4 + UDP_HLEN


# --------------------------------------------------------------------------- 5-tuple


@_njit
def five_tuple_values(frame: Frame) -> tuple[bool, int, int, int, int, int]:
    """``(ok, src_ip, dst_ip, proto, sport, dport)`` without allocating (see ``five_tuple``).

    On failure the tuple is ``(False, 0, 0, 0, 0, 0)``.
    """
    l3 = ipv4_offset(frame)
    hlen = ipv4_ihl_bytes(frame, l3)
    n = frame.shape[0]
    src = _rd32_at(frame, l3, 12)
    dst = _rd32_at(frame, l3, 16)
    proto = _rd8_at(frame, l3, 9)
    flags_frag = _rd16_at(frame, l3, 6)
    # Read speculatively (bounds-checked): -1 when absent; only used if the header is valid.
    sport, dport = l4_ports(frame, l3 + hlen if hlen >= IPV4_MIN_HLEN else -1)
    if l3 < 0 or hlen < IPV4_MIN_HLEN or l3 + hlen > n:
        return (False, 0, 0, 0, 0, 0)
    if proto not in (IPPROTO_TCP, IPPROTO_UDP) or (flags_frag & 0x1FFF) != 0:
        return (True, src, dst, proto, 0, 0)
    if dport < 0:
        return (False, 0, 0, 0, 0, 0)
    return (True, src, dst, proto, sport, dport)


@_njit
def five_tuple(frame: Frame, out: npt.NDArray[np.int64]) -> bool:
    """Fill ``out[0:5]`` with (src ip, dst ip, proto, src port, dst port); False if unusable.

    Ports are 0 for protocols other than TCP/UDP and for non-first fragments (their L4 header is
    in another fragment). Returns False, leaving ``out`` untouched, for non-IPv4 frames, an
    invalid/truncated IP header, TCP/UDP whose ports are cut off, or ``out`` shorter than 5.
    """
    ok, src, dst, proto, sport, dport = five_tuple_values(frame)
    if not ok or out.shape[0] < 5:
        return False
    out[0] = src
    out[1] = dst
    out[2] = proto
    out[3] = sport
    out[4] = dport
    return True
