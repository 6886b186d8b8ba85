"""Captures of other link types, read as Ethernet: raw IP and Linux "cooked" (SLL, SLL2).

Why: every µNF parses Ethernet frames, and the graph's outputs are Ethernet pcaps (link type 1),
but common captures are not Ethernet: ``tcpdump -i any`` writes Linux cooked captures (SLL, link
type 113, or SLL2, 276, with ``-y LINUX_SLL2``), tunnels and ``tun`` devices give raw IP (101).
Taking such frames as Ethernet would parse garbage (every packet dropped as ``not_ipv4``), so
:func:`read_ethernet` gives each frame an Ethernet header built from its link-layer header, once
per file, in one numba pass (no per-packet Python):

=====================  ===========================================================================
link type              Ethernet header given to each frame
=====================  ===========================================================================
1 Ethernet             unchanged
101 RAW (also 12, 14   EtherType from the IP version nibble: 4 -> 0x0800, 6 -> 0x86DD; MACs zero.
the old DLT_RAW        (12 and 14 are the values BSDs used for DLT_RAW in files; 228/229 are
values, 228 IPv4,      raw IPv4/IPv6 with the same treatment.)
229 IPv6)
113 LINUX_SLL          EtherType = the SLL protocol field; source MAC = the SLL address when it is
276 LINUX_SLL2         6 bytes long (else zero); destination MAC: ff:ff:ff:ff:ff:ff for packets the
                       kernel marked broadcast, the IPv4 (01:00:5e:...) or IPv6 (33:33:...) group
                       address for multicast, zero otherwise. A protocol below 0x0600 (802.2 LLC,
                       802.3 and other non-Ethernet payloads) becomes an 802.3 length field.
=====================  ===========================================================================

A frame of an unknown IP version gets an 802.3 length field too (µNFs drop it as not IP); a
frame cut inside its link-layer header becomes the bare 14-byte Ethernet header. Timestamps are
kept; wire lengths change by the same amount as the captured ones (a 16-byte SLL header becomes
14 bytes). Any other link type is a :class:`~micronf.io.trace.PcapError` naming the ones
supported. The converted trace has link type 1, so every output pcap is an Ethernet capture.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from micronf.dataplane.memcopy import copy_bytes
from micronf.io.pcap_read import read_pcap
from micronf.io.trace import I32, I64, LINKTYPE_ETHERNET, U8, PathLike, PcapError, Trace

__all__ = ["LINKTYPE_LINUX_SLL", "LINKTYPE_LINUX_SLL2", "LINKTYPE_RAW", "read_ethernet", "to_ethernet"]

LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_RAW_TYPES = (LINKTYPE_RAW, 12, 14, 228, 229)
_SUPPORTED = "1 Ethernet, 101 (12, 14, 228, 229) raw IP, 113 Linux cooked SLL, 276 Linux cooked SLL2"
_KNOWN = {  # names of common unsupported link types, for the error message
    0: "BSD loopback (NULL)", 9: "PPP", 50: "PPP over serial", 105: "IEEE 802.11", 108: "OpenBSD loopback",
    119: "Prism 802.11", 127: "802.11 radiotap", 147: "user-defined (DLT_USER0)", 192: "PPI", 195: "IEEE 802.15.4",
    220: "USB Linux (mmapped)", 249: "Bluetooth", 253: "netlink", 263: "BluetoothLE LL",
}

_ETH = 14
_KIND_RAW, _KIND_SLL, _KIND_SLL2 = 0, 1, 2
_HDR = {_KIND_RAW: 0, _KIND_SLL: 16, _KIND_SLL2: 20}  # link-layer header bytes by kind
_PKT_BROADCAST, _PKT_MULTICAST = 1, 2


@njit(cache=True, nogil=True)
def _be16(b: U8, off: int) -> int:
    return int((np.int64(b[off]) << 8) | np.int64(b[off + 1]))


@njit(cache=True, nogil=True)
def _ethernet_header(out: U8, o: int, data: U8, s: int, ln: int, kind: int, hdr: int) -> None:
    """Write the 14-byte Ethernet header for the frame ``data[s : s + ln]`` of ``kind`` at ``out[o]``."""
    body = ln - hdr  # >= 0: the caller checked
    p = s + hdr  # first byte of the network-layer packet
    for k in range(12):
        out[o + k] = 0
    etype = -1
    if kind == _KIND_RAW:
        version = np.int64(data[p]) >> 4 if body > 0 else 0
        if version == 4:
            etype = 0x0800
        elif version == 6:
            etype = 0x86DD
        pkt_type = 0
    else:
        if kind == _KIND_SLL:
            pkt_type, alen, addr, proto = _be16(data, s), _be16(data, s + 4), s + 6, _be16(data, s + 14)
        else:
            pkt_type, alen = int(np.int64(data[s + 10])), int(np.int64(data[s + 11]))
            addr, proto = s + 12, _be16(data, s)
        if proto >= 0x0600:
            etype = proto
        if alen == 6:
            for k in range(6):
                out[o + 6 + k] = data[addr + k]
    if pkt_type == _PKT_BROADCAST:
        for k in range(6):
            out[o + k] = 0xFF
    elif pkt_type == _PKT_MULTICAST:
        if etype == 0x0800 and body >= 20:  # RFC 1112: 01:00:5e + low 23 bits of the group
            out[o], out[o + 1], out[o + 2] = 0x01, 0x00, 0x5E
            out[o + 3] = data[p + 17] & 0x7F
            out[o + 4] = data[p + 18]
            out[o + 5] = data[p + 19]
        elif etype == 0x86DD and body >= 40:  # RFC 2464: 33:33 + low 32 bits of the group
            out[o], out[o + 1] = 0x33, 0x33
            for k in range(4):
                out[o + 2 + k] = data[p + 36 + k]
    if etype < 0:  # not an EtherType: the 802.3 length form
        etype = body if body <= 1500 else 0
    out[o + 12] = (etype >> 8) & 0xFF
    out[o + 13] = etype & 0xFF


@njit(cache=True, nogil=True)
def _convert(kind: int, hdr: int, data: U8, offsets: I64, lengths: I32, orig: I32,
             out_data: U8, out_off: I64, out_len: I32, out_orig: I32) -> None:
    """Every frame with its ``hdr``-byte link-layer header replaced by an Ethernet header (the
    caller sizes the outputs)."""
    pos = 0
    for i in range(offsets.shape[0]):
        s, ln = offsets[i], int(lengths[i])
        o = pos
        if ln < hdr:  # cut inside its link-layer header: nothing to translate
            for k in range(_ETH):
                out_data[o + k] = 0
            body = 0
        else:
            _ethernet_header(out_data, o, data, s, ln, kind, hdr)
            body = ln - hdr
            copy_bytes(out_data, o + _ETH, data, s + hdr, body)
        out_off[i] = o
        out_len[i] = _ETH + body
        out_orig[i] = min(_ETH + max(int(orig[i]) - hdr, body), (1 << 31) - 1)
        pos += _ETH + body


def _unsupported(name: str, linktype: int) -> PcapError:
    what = f" ({_KNOWN[linktype]})" if linktype in _KNOWN else ""
    return PcapError(name, 0, f"link type {linktype}{what} is not supported (supported: {_SUPPORTED})")


def to_ethernet(trace: Trace, name: str = "capture") -> Trace:
    """``trace`` as Ethernet frames (see the module docstring); ``name`` is the file named by errors."""
    lt = trace.linktype
    if lt == LINKTYPE_ETHERNET:
        return trace
    if lt in _RAW_TYPES:
        kind = _KIND_RAW
    elif lt == LINKTYPE_LINUX_SLL:
        kind = _KIND_SLL
    elif lt == LINKTYPE_LINUX_SLL2:
        kind = _KIND_SLL2
    else:
        raise _unsupported(name, lt)
    hdr = _HDR[kind]
    n = len(trace)
    total = int(np.maximum(trace.lengths.astype(np.int64) - hdr, 0).sum()) + _ETH * n
    data, off = np.empty(total, np.uint8), np.empty(n, np.int64)
    lens, orig = np.empty(n, np.int32), np.empty(n, np.int32)
    _convert(kind, hdr, trace.data, trace.offsets, trace.lengths, trace.orig_lengths, data, off, lens, orig)
    return Trace(data, off, lens, orig, trace.ts_ns, linktype=LINKTYPE_ETHERNET, truncated=trace.truncated)


def read_ethernet(path: PathLike, *, strict: bool = False, mapped: bool = False) -> Trace:
    """:func:`~micronf.io.pcap_read.read_pcap` (``mapped``: see there), then :func:`to_ethernet`: what
    the offline runners and the pcap Rx backend replay. Raises :class:`~micronf.io.trace.PcapError`
    for a file that is not a capture and for an unsupported link type."""
    return to_ethernet(read_pcap(path, strict=strict, mapped=mapped), os.fspath(path))
