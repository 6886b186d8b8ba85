"""Flow hashes: murmur3-32 over the 5-tuple, and the jump consistent hash that maps one to a bucket.

Why one module: every component that spreads flows (the Rx service over its entries, the
load-balanced egress port over instances, FlowLoadBalancer over backends) must agree on both, so a
flow lands on the same bucket whichever of them picks it.

murmur3 is computed with masked ``int64`` math that never overflows (numba's signed arithmetic is
``nsw``: overflow is undefined, not wrapping), so the same code gives identical results compiled and
interpreted. The frame-level hashes follow the conventions of :mod:`micronf.packet.headers`.
"""

from __future__ import annotations

import numpy as np

from micronf.packet.headers import Frame, five_tuple_values, ipv4_is_fragment, l3_offset
from micronf.packet.jit import inline_kernel as _njit
from micronf.packet.jit import kernel

__all__ = [
    "flow_hash",
    "flow_hash_symmetric",
    "frame_flow_hash",
    "frame_flow_hash_symmetric",
    "jump_hash",
]

_M32 = 0xFFFFFFFF


@_njit
def _mul32(a: int, b: int) -> int:
    """``(a * b) mod 2**32`` for 32-bit ``a, b`` without overflowing int64 (products < 2**48).

    A plain ``(a * b) & 0xFFFFFFFF`` would be wrong in compiled code: numba emits signed integer
    arithmetic with LLVM's ``nsw`` flag, so an int64 overflow is undefined behaviour, not a wrap.
    """
    lo = a * (b & 0xFFFF)
    hi = (a * (b >> 16)) & 0xFFFF
    return (lo + (hi << 16)) & _M32


@_njit
def _rotl32(x: int, r: int) -> int:
    """Rotate the 32-bit value ``x`` left by ``r`` bits."""
    return ((x << r) | (x >> (32 - r))) & _M32


@_njit
def _mm3_mix(h: int, k: int) -> int:
    """One murmur3-32 body round: absorb the 32-bit block ``k`` into state ``h``."""
    k = _mul32(k & _M32, 0xCC9E2D51)
    k = _rotl32(k, 15)
    k = _mul32(k, 0x1B873593)
    h ^= k
    h = _rotl32(h, 13)
    return (_mul32(h, 5) + 0xE6546B64) & _M32


@_njit
def _fmix32(h: int) -> int:
    """murmur3 finaliser: every input bit affects every output bit with ~1/2 probability."""
    h ^= h >> 16
    h = _mul32(h, 0x85EBCA6B)
    h ^= h >> 13
    h = _mul32(h, 0xC2B2AE35)
    h ^= h >> 16
    return h


@_njit
def flow_hash(src: int, dst: int, proto: int, sport: int, dport: int) -> int:
    """32-bit murmur3 hash of a directed 5-tuple (16-byte key, seed 0); result in [0, 2**32).

    Inputs are masked to their field widths (32/32/8/16/16 bits), so ``-1`` sentinels are safe.
    The low bits are as well mixed as the high ones: ``h & (n - 1)`` is a fine bucket index.
    """
    h = _mm3_mix(0, src & _M32)
    h = _mm3_mix(h, dst & _M32)
    h = _mm3_mix(h, ((sport & 0xFFFF) << 16) | (dport & 0xFFFF))
    h = _mm3_mix(h, proto & 0xFF)
    h ^= 16
    return _fmix32(h)


@_njit
def flow_hash_symmetric(src: int, dst: int, proto: int, sport: int, dport: int) -> int:
    """Direction-independent ``flow_hash``: both directions of a connection hash the same.

    The (ip, port) endpoints are put in a canonical order (smaller (ip, port) first) first.
    """
    a = src & _M32
    b = dst & _M32
    pa = sport & 0xFFFF
    pb = dport & 0xFFFF
    if a > b or (a == b and pa > pb):
        return flow_hash(b, a, proto, pb, pa)
    return flow_hash(a, b, proto, pa, pb)


@_njit
def _hash_tuple(frame: Frame) -> tuple[bool, int, int, int, int, int]:
    """The 5-tuple to hash: ports zeroed for every fragment, the first one included, so all pieces
    of a datagram hash alike (only the first carries the ports)."""
    ok, src, dst, proto, sport, dport = five_tuple_values(frame)
    fragment = ipv4_is_fragment(frame, l3_offset(frame))  # every frame read before any branch: no refcounts
    if fragment:
        sport = 0
        dport = 0
    return ok, src, dst, proto, sport, dport


@_njit
def frame_flow_hash(frame: Frame) -> int:
    """``flow_hash`` of the frame's 5-tuple, with ports 0 for any fragment; 0 for non-IPv4.

    0 is also a (rare, 2**-32) legitimate hash; it only serves as a stable bucket for non-IPv4.
    """
    ok, src, dst, proto, sport, dport = _hash_tuple(frame)
    if not ok:
        return 0
    return flow_hash(src, dst, proto, sport, dport)


@_njit
def frame_flow_hash_symmetric(frame: Frame) -> int:
    """``flow_hash_symmetric`` of the frame's 5-tuple (ports 0 for any fragment); 0 for non-IPv4."""
    ok, src, dst, proto, sport, dport = _hash_tuple(frame)
    if not ok:
        return 0
    return flow_hash_symmetric(src, dst, proto, sport, dport)


_JUMP_MUL = np.uint64(2862933555777941757)


@kernel
def jump_hash(key: int, n_buckets: int) -> int:
    """Jump consistent hash (Lamping & Veach 2014): the bucket 0..n_buckets-1 of a 64-bit ``key``.

    Growing ``n_buckets`` by one moves a key only to the new bucket, and with probability
    1/(n_buckets+1). Identical to the paper's C++ reference (64-bit LCG, double division).
    """
    k = np.uint64(key)
    b = -1
    j = 0
    while j < n_buckets:
        b = j
        k = k * _JUMP_MUL + np.uint64(1)
        j = int((b + 1) * (2147483648.0 / float((k >> np.uint64(33)) + np.uint64(1))))
    return b
