"""IPTtlDecrementer: decrement the IPv4 time-to-live (paper §VII-A3, Click's DecIPTTL)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.borrow import borrowed_pool
from micronf.dataplane.pool import PoolArrays, pkt_frame
from micronf.nfs.check_ip_header import IPV4_OK, NOT_IPV4, ipv4_header_check
from micronf.packet.checksum import csum_update16
from micronf.packet.headers import rd16, wr16
from micronf.runtime.descriptor import Access, Descriptor
from micronf.runtime.nf import MicroNF, drop_code

_OUT = 0
_EXPIRED = 1
_NOT_IPV4 = drop_code(0)
_BAD_HEADER = drop_code(1)


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: npt.NDArray[np.uint32], n: int, verdicts: npt.NDArray[np.int32],
           state: tuple[npt.NDArray[Any], ...], counters: npt.NDArray[np.int64]) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame per packet (and per header helper)
    for i in range(n):
        f = pkt_frame(p, handles[i])
        status, l3, _ = ipv4_header_check(f)
        if status != IPV4_OK:
            verdicts[i] = _NOT_IPV4 if status == NOT_IPV4 else _BAD_HEADER
            continue
        ttl_proto = rd16(f, l3 + 8)
        if ttl_proto < 0x200:  # TTL 0 or 1
            verdicts[i] = _EXPIRED
            continue
        wr16(f, l3 + 8, ttl_proto - 0x100)
        wr16(f, l3 + 10, csum_update16(rd16(f, l3 + 10), ttl_proto, ttl_proto - 0x100))
        verdicts[i] = _OUT


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
    labels = ("out", "expired")
    drop_reasons = ("not_ipv4", "bad_header")
    kernel = kernel
