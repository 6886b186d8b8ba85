"""Internet checksums (RFC 1071 full computation, RFC 1624 eqn. 3 incremental update), callable from numba.

Same conventions as :mod:`micronf.packet.headers`: bounds are checked against the real array length,
failure is ``-1``/``False``, and frame bytes are read before any branch so that the helpers inline into
a batch loop without NRT reference counting. :func:`sum16` works on any byte array (a frame, or a
buffer holding many frames at offsets, as the traffic generator writes them).
"""

from __future__ import annotations

from micronf.packet.headers import IPV4_MIN_HLEN, Frame, _rd8_at, _rd16_at, ipv4_ihl_bytes, rd16
from micronf.packet.jit import inline_kernel as _njit

__all__ = ["csum_finish", "csum_update16", "fold16", "ipv4_checksum", "ipv4_checksum_ok", "sum16"]


@_njit
def fold16(s: int) -> int:
    """Fold a non-negative sum of 16-bit words into 16 bits with end-around carry."""
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@_njit
def sum16(frame: Frame, start: int, length: int, skip: int) -> int:
    """Plain (unfolded) sum of the big-endian 16-bit words of ``frame[start:start+length]``, or -1.

    The word at absolute offset ``skip`` (an even distance from ``start``; -1 for none) is left
    out; an odd last byte is zero-padded. -1 if ``start < 0``, ``length < 0`` or the range is not
    inside the frame. The conditional reads are written as expressions so that the loop stays free
    of NRT reference counting once inlined (see :mod:`micronf.packet.headers`).
    """
    n = frame.shape[0]
    ok = start >= 0 and length >= 0 and start + length <= n
    end = start + (length & ~1) if ok else start
    s = 0
    i = start
    while i < end:
        s += rd16(frame, i)
        i += 2
    last = _rd8_at(frame, end, 0) if ok and (length & 1) else 0
    skipped = _rd16_at(frame, skip, 0) if ok and skip >= start and skip + 2 <= end else 0
    if not ok:
        return -1
    return s + (last << 8) - skipped


@_njit
def csum_finish(s: int) -> int:
    """The Internet checksum to store for the unfolded sum ``s``: its folded one's complement."""
    return (~fold16(s)) & 0xFFFF


@_njit
def ipv4_checksum(frame: Frame, l3: int, hlen: int) -> int:
    """The header checksum to store: RFC 1071 over ``hlen`` bytes, checksum field taken as 0.

    -1 if ``l3 < 0``, ``hlen < 20`` or the header does not fit in the frame. An odd ``hlen`` is
    zero-padded (never happens for IPv4, whose header is a multiple of 4 bytes).
    """
    s = sum16(frame, l3, hlen, l3 + 10)
    if hlen < IPV4_MIN_HLEN or s < 0:
        return -1
    return csum_finish(s)


@_njit
def ipv4_checksum_ok(frame: Frame, l3: int) -> bool:
    """True if the IHL*4-byte header (options included) sums to 0xFFFF.

    False if the header is truncated or IHL < 5.
    """
    hlen = ipv4_ihl_bytes(frame, l3)
    s = sum16(frame, l3, hlen, -1)
    return hlen >= IPV4_MIN_HLEN and s >= 0 and fold16(s) == 0xFFFF


@_njit
def csum_update16(csum: int, old: int, new: int) -> int:
    """Incrementally update checksum ``csum`` when one 16-bit word changes from ``old`` to ``new``.

    RFC 1624 eqn. 3, ``HC' = ~(~HC + ~m + m')`` in one's-complement arithmetic. Unlike eqn. 2 it
    never produces 0xFFFF (-0) where a full recomputation gives 0x0000, so it equals a full
    recompute for any data that is not all zero (always the case for an IPv4 header).
    """
    s = ((~csum) & 0xFFFF) + ((~old) & 0xFFFF) + (new & 0xFFFF)
    return (~fold16(s)) & 0xFFFF
