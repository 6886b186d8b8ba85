"""What the replica tests compute independently of micronf: which replica a frame belongs to.

A replicated graph shards its input by ``jump_hash(flow hash, replicas)``. The tests' reference
hashes (textbook murmur3 of the 5-tuple, the published jump hash, in plain Python: ``tests.shards``)
decide here, on the 5-tuple read from the frame bytes with ``struct``, so a test checks the agent's
sharding against a second implementation, not against itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache

from tests.packet.test_headers import ref_flow_hash
from tests.shards import ref_jump_hash


@dataclass(frozen=True)
class Frame:
    """What the tests need of an IPv4 TCP/UDP frame."""

    flow: tuple[int, int, int, int, int]  # src, dst, proto, sport, dport
    src: str
    target: bytes | None  # an HTTP request's target, else None

    def replica(self, replicas: int) -> int:
        return _replica(self.flow, replicas)


@cache
def _replica(flow: tuple[int, int, int, int, int], replicas: int) -> int:
    return ref_jump_hash(ref_flow_hash(*flow), replicas)


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
