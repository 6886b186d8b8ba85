"""CheckIPHeader: drop malformed IPv4 packets and trim Ethernet padding (paper §VII-A3, Click's CheckIPHeader).

Also home of ``ipv4_header_check``, the IPv4 header triage shared by the µNFs that rewrite or
match IPv4 headers (IPTtlDecrementer, L3L4Filter, FlowLoadBalancer): its status codes are
CheckIPHeader's own drop verdicts, so each of those µNFs maps them onto its coarser reasons.
"""

from __future__ import annotations

from enum import auto
from ipaddress import IPv4Address
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field

from micronf.nf import (
    Access,
    CounterArray,
    Counters,
    Descriptor,
    DropReasons,
    Handles,
    MicroNF,
    NFConfig,
    Out,
    PoolArrays,
    VerdictArray,
    borrowed,
    borrowed_pool,
    pkt_frame,
    pkt_set_len,
)
from micronf.packet.checksum import ipv4_checksum_ok
from micronf.packet.headers import (
    ETHERTYPE_IPV4,
    IPV4_MIN_HLEN,
    eth_type,
    ipv4_ihl_bytes,
    ipv4_src,
    ipv4_total_length,
    l3_offset,
)

Frame = npt.NDArray[np.uint8]


class Drop(DropReasons):
    """CheckIPHeader's drop reasons; the first five are also ``ipv4_header_check`` statuses."""

    not_ipv4 = auto()
    tiny = auto()
    bad_version = auto()
    bad_hlen = auto()
    hlen_exceeds_frame = auto()
    len_below_hlen = auto()
    len_exceeds_frame = auto()
    bad_checksum = auto()
    bad_src = auto()


class Counter(Counters):
    trimmed = auto()


class State(NamedTuple):
    bad_src: npt.NDArray[np.int64]  # the rejected source addresses
    checksum: npt.NDArray[np.int64]  # [1]: 1 to verify the header checksum


IPV4_OK = 0  # ipv4_header_check: a whole IPv4 header


@njit(cache=True, nogil=True)
def ipv4_header_check(frame: Frame) -> tuple[int, int, int]:
    """``(status, l3, hlen)``: is there a whole IPv4 header (options included) in ``frame``?

    ``status`` is ``IPV4_OK`` (then ``l3`` is the header's offset, behind at most one 802.1Q tag,
    and ``hlen`` its length IHL*4, 20..60, entirely inside the frame) or the first failure, as a
    ``Drop`` member: ``tiny`` (the Ethernet/802.1Q header is cut off), ``not_ipv4`` (EtherType other
    than 0x0800, e.g. ARP, IPv6 or a second VLAN tag), ``tiny`` (the 20-byte fixed IPv4 header is
    cut off), ``bad_version``, ``bad_hlen`` (IHL < 5), ``hlen_exceeds_frame``; ``l3``/``hlen`` are then
    meaningless. Reads nothing past the frame. The total length field is not looked at.
    """
    l3 = l3_offset(frame)
    if l3 < 0:
        return (Drop.tiny, -1, 0)
    if eth_type(frame) != ETHERTYPE_IPV4:
        return (Drop.not_ipv4, -1, 0)
    if frame.shape[0] - l3 < IPV4_MIN_HLEN:
        return (Drop.tiny, -1, 0)
    if (frame[l3] >> 4) != 4:
        return (Drop.bad_version, -1, 0)
    hlen = ipv4_ihl_bytes(frame, l3)
    if hlen < IPV4_MIN_HLEN:
        return (Drop.bad_hlen, -1, 0)
    if l3 + hlen > frame.shape[0]:
        return (Drop.hlen_exceeds_frame, -1, 0)
    return (IPV4_OK, l3, hlen)


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: State,
           counters: CounterArray) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame and the table per packet
    bad_src = borrowed(state.bad_src)
    check_sum = state.checksum[0] != 0
    trimmed = 0
    for i in range(n):
        h = handles[i]
        f = pkt_frame(p, h)
        status, l3, hlen = ipv4_header_check(f)
        if status != IPV4_OK:
            verdicts[i] = status
            continue
        length = ipv4_total_length(f, l3)
        if length < hlen:
            verdicts[i] = Drop.len_below_hlen
            continue
        if l3 + length > f.shape[0]:
            verdicts[i] = Drop.len_exceeds_frame
            continue
        if check_sum and not ipv4_checksum_ok(f, l3):
            verdicts[i] = Drop.bad_checksum
            continue
        if ipv4_src(f, l3) in bad_src:
            verdicts[i] = Drop.bad_src
            continue
        if l3 + length < f.shape[0]:
            pkt_set_len(p, h, l3 + length)
            trimmed += 1
        verdicts[i] = Out.out
    counters[Counter.trimmed] += trimmed


class CheckIPHeader(MicroNF):
    """Check IPv4 headers like Click's CheckIPHeader: drop bad ones, cut frames to the IP length.

    Config:
        checksum: verify the header checksum (default true; false is Click's CheckIPHeader2).
        bad_src: source addresses to reject, e.g. 0.0.0.0, 255.255.255.255 and subnet broadcasts
            (default none, like Click's ``CheckIPHeader()`` without BADSRC or INTERFACES).
    Ports:
        out: IPv4 packets that pass every check, the frame cut to end at the IP total length.
        drop:not_ipv4: EtherType (behind at most one 802.1Q tag) is not IPv4: ARP, IPv6, QinQ...
        drop:tiny: the Ethernet/802.1Q header or the 20-byte fixed IP header is cut off.
        drop:bad_version: EtherType IPv4 but the version field is not 4.
        drop:bad_hlen: IHL < 5.
        drop:hlen_exceeds_frame: the IHL*4-byte header (options) does not fit in the frame.
        drop:len_below_hlen: total length < IHL*4 (this includes every total length < 20 and 0).
        drop:len_exceeds_frame: total length > the bytes the frame holds after the L2 header.
        drop:bad_checksum: the header (options included) does not sum to 0xFFFF.
        drop:bad_src: the source address is in ``bad_src``.
    Counters:
        trimmed: frames passed on shorter than they came in (Ethernet padding or trailing bytes
            beyond the IP total length removed).
    Notes:
        Checks run in Click's order (lengths, then checksum, then source) and an IPv4 frame passes
        exactly when Click's ``CheckIPHeader(OFFSET 14)`` (18 behind a VLAN tag) would pass it;
        reasons are finer than Click's: tiny is Click's "tiny packet" (frames cut inside the L2
        header included, as with Click's OFFSET), its "bad IP length" is split into
        hlen_exceeds_frame/len_below_hlen/len_exceeds_frame. Non-IPv4 frames are told apart by
        EtherType (not_ipv4) where Click, fed everything, would mostly report a bad version.
        Click's GOODDST exemption and its destination-address annotation have no counterpart
        (no annotation word in the pool).
        Fragments and IP options are checked like any other header. Trimming only lowers the
        frame length in the packet metadata, no byte is written: L3 is read-only, L2 untouched.
        Cost: one pass over the IHL*4 header bytes for the checksum, a scan of ``bad_src``.
    """

    class Config(NFConfig):
        """Config of CheckIPHeader."""

        checksum: bool = Field(
            default=True,
            description="Verify the IPv4 header checksum; false skips it, like Click's CheckIPHeader2.",
        )
        bad_src: list[IPv4Address] = Field(
            default_factory=list,
            description="Source addresses to drop as bad_src (RFC 1812 §5.3.7), e.g. 0.0.0.0, "
            "255.255.255.255 and the subnet broadcast addresses of the router's interfaces.",
        )

    descriptor = Descriptor(l3=Access.READ, may_drop=True)
    Drop = Drop
    Counter = Counter
    config: Config
    kernel = kernel

    def state(self) -> State:
        return State(
            bad_src=np.array([int(a) for a in self.config.bad_src], dtype=np.int64),
            checksum=np.array([int(self.config.checksum)], dtype=np.int64),
        )
