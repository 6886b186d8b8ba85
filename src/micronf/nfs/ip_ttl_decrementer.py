"""IPTtlDecrementer: decrement the IPv4 time-to-live (paper §VII-A3, Click's DecIPTTL)."""

from __future__ import annotations

from enum import auto

from numba import njit

from micronf.nf import (
    Access,
    CounterArray,
    Descriptor,
    DropReasons,
    Handles,
    Labels,
    MicroNF,
    NoState,
    PoolArrays,
    VerdictArray,
    borrowed_pool,
    pkt_frame,
)
from micronf.nfs.check_ip_header import IPV4_OK, ipv4_header_check
from micronf.nfs.check_ip_header import Drop as HeaderCheck
from micronf.packet.checksum import csum_update16
from micronf.packet.headers import rd16, wr16


class Label(Labels):
    out = auto()
    expired = auto()


class Drop(DropReasons):
    not_ipv4 = auto()
    bad_header = auto()


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: NoState,
           counters: CounterArray) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame per packet (and per header helper)
    for i in range(n):
        f = pkt_frame(p, handles[i])
        status, l3, _ = ipv4_header_check(f)
        if status != IPV4_OK:
            verdicts[i] = Drop.not_ipv4 if status == HeaderCheck.not_ipv4 else Drop.bad_header
            continue
        ttl_proto = rd16(f, l3 + 8)
        if ttl_proto < 0x200:  # TTL 0 or 1
            verdicts[i] = Label.expired
            continue
        wr16(f, l3 + 8, ttl_proto - 0x100)
        wr16(f, l3 + 10, csum_update16(rd16(f, l3 + 10), ttl_proto, ttl_proto - 0x100))
        verdicts[i] = Label.out


class IPTtlDecrementer(MicroNF):
    """Decrement the IPv4 TTL and patch the header checksum, like Click's DecIPTTL.

    Config:
        (none)
    Ports:
        out: IPv4 packets that had TTL >= 2, now with TTL - 1 and the checksum updated.
        expired: IPv4 packets with TTL 0 or 1, unchanged (Click's output 1; route them to an
            ICMP time-exceeded generator or a drop).
        drop:not_ipv4: EtherType (behind at most one 802.1Q tag) is not IPv4.
        drop:bad_header: an IPv4 frame whose header is unusable: cut off, version not 4, IHL < 5
            or options running past the end of the frame.
    Counters:
        (none)
    Notes:
        The checksum is updated incrementally (RFC 1624 eqn. 3 on the TTL/protocol word), so the
        result equals a full recomputation for a correct header and a wrong checksum stays wrong,
        as in Click. Lengths and checksum are not validated: put CheckIPHeader first for that.
        Fragments are decremented like any packet; one 802.1Q tag is looked through. Cost: four
        byte loads and four stores per packet, the IP options are never read.
    """

    descriptor = Descriptor(l3=Access.WRITE, may_drop=True)
    Label = Label
    Drop = Drop
    kernel = kernel
