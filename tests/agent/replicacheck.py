"""What the replica tests compute independently of micronf: which replica a frame belongs to.

A replicated graph shards its input by ``jump_hash(murmur3_32(5-tuple), replicas)``. Here both
hashes are written again in plain Python from their published definitions (murmur3_32 over the
16-byte key src, dst, sport << 16 | dport, proto as little-endian words, seed 0; Lamping & Veach's
jump consistent hash), and the 5-tuple is read from the frame bytes with ``struct``, so a test
checks the agent's sharding against a second implementation, not against itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

M32 = 0xFFFFFFFF


def murmur3_32(key: bytes, seed: int = 0) -> int:
    """murmur3 x86 32-bit of ``key`` (length a multiple of 4, as every flow key is)."""
    h = seed
    for (k,) in struct.iter_unpack("<I", key):
        k = (k * 0xCC9E2D51) & M32
        k = ((k << 15) | (k >> 17)) & M32
        k = (k * 0x1B873593) & M32
        h ^= k
        h = ((h << 13) | (h >> 19)) & M32
        h = (h * 5 + 0xE6546B64) & M32
    h ^= len(key)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def jump(key: int, buckets: int) -> int:
    """Jump consistent hash (Lamping & Veach 2014, the C++ reference)."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


@dataclass(frozen=True)
class Frame:
    """What the tests need of an IPv4 TCP/UDP frame."""

    flow: tuple[int, int, int, int, int]  # src, dst, proto, sport, dport
    src: str
    target: bytes | None  # an HTTP request's target, else None

    def replica(self, replicas: int) -> int:
        src, dst, proto, sport, dport = self.flow
        return jump(murmur3_32(struct.pack("<IIII", src, dst, (sport << 16) | dport, proto)), replicas)


def parse(frame: bytes) -> Frame:
    """The 5-tuple, the source address and the HTTP request-target of an Ethernet/IPv4 frame."""
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    src, dst = struct.unpack_from("!II", frame, 26)
    l4 = 14 + ihl
    sport, dport = struct.unpack_from("!HH", frame, l4)
    target = None
    if proto == 6:
        payload = frame[l4 + (frame[l4 + 12] >> 4) * 4:]
        if payload.startswith(b"GET "):
            target = payload[4:].split(b" ", 1)[0]
    return Frame(flow=(src, dst, proto, sport, dport), src=".".join(str(b) for b in frame[26:30]), target=target)
