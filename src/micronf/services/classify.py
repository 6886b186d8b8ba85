"""5-tuple classification of the Rx service: exact rules by hash, wildcard rules in order.

Why two kinds: an operator steering a few known flows into a graph writes exact rules (all five
fields, host addresses, single ports), and there may be many of them — they live in an
open-addressing hash table, one probe sequence per packet whatever their number. Prefix and range
rules (``10.0.0.0/8``, ``dport 80``) are few and ordered: they are checked one by one, first match
wins. An exact match wins over any wildcard rule. With no rules at all every packet is accepted.

The rules are :class:`micronf.packet.rules.FlowRule` (the syntax L3L4Filter reads too) and the
wildcard rules are scanned by its :func:`~micronf.packet.rules.first_match`. Everything a kernel
needs is in :class:`RuleTables` (plain int64 arrays); :func:`classify_frame` runs inside the Rx
burst kernel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.packet.headers import IPPROTO_TCP, IPPROTO_UDP, Frame, five_tuple_values, ipv4_frag_offset, l3_offset
from micronf.packet.rules import ACTION, FlowRule, first_match, rule_table

ACCEPT, DROP, UNMATCHED = 0, 1, 2
EMPTY = -1  # an unused hash-table slot (no real key is negative)

I64 = npt.NDArray[np.int64]


class RuleTables(NamedTuple):
    """Compiled rules: ``wild`` (:func:`micronf.packet.rules.rule_table`); exact keys (two int64
    halves) and actions in a table of power-of-two size; ``any_rules`` 0 means accept everything."""

    wild: I64
    key_a: I64
    key_b: I64
    action: I64
    any_rules: int


def _key(src: int, dst: int, proto: int, sport: int, dport: int) -> tuple[int, int]:
    return (src << 32) | dst, (proto << 32) | (sport << 16) | dport


@njit(cache=True, nogil=True)
def _slot(a: int, b: int, mask: int) -> int:
    h = (a * 0x1E3779B97F4A7C15 + b * 0x42B2AE3D27D4EB4F) & 0x7FFFFFFFFFFFFFFF
    return (h >> 17) & mask


def compile_rules(rules: Sequence[FlowRule]) -> RuleTables:
    """Turn validated rules into the arrays the Rx kernel reads."""
    exact = [r for r in rules if r.is_exact]
    table = rule_table([r for r in rules if not r.is_exact], ACCEPT, DROP)
    size = 16
    while size < 2 * len(exact):
        size *= 2
    key_a = np.full(size, EMPTY, dtype=np.int64)
    key_b = np.full(size, EMPTY, dtype=np.int64)
    action = np.zeros(size, dtype=np.int64)
    for r in exact:
        src, dst = (int(ipaddress.IPv4Network(x).network_address) for x in (r.src, r.dst))
        a, b = _key(src, dst, r.proto_number, int(r.sport), int(r.dport))
        s = int(_slot(a, b, size - 1))
        while key_a[s] != EMPTY and not (key_a[s] == a and key_b[s] == b):
            s = (s + 1) & (size - 1)
        if key_a[s] == EMPTY:  # a repeated exact rule keeps the first one's action
            key_a[s], key_b[s], action[s] = a, b, DROP if r.action == "deny" else ACCEPT
    return RuleTables(table, key_a, key_b, action, int(bool(rules)))


@njit(cache=True, nogil=True)
def classify_frame(frame: Frame, t: RuleTables) -> int:
    """ACCEPT, DROP or UNMATCHED for one frame."""
    if t.any_rules == 0:
        return ACCEPT
    ok, src, dst, proto, sport, dport = five_tuple_values(frame)
    fragment = ipv4_frag_offset(frame, l3_offset(frame)) != 0  # read before any branch: no refcounts
    if not ok:
        return UNMATCHED
    mask = t.key_a.shape[0] - 1
    a = (src << 32) | dst
    b = (proto << 32) | (sport << 16) | dport
    s = _slot(a, b, mask)
    while t.key_a[s] != EMPTY:
        if t.key_a[s] == a and t.key_b[s] == b:
            found: int = t.action[s]
            return found
        s = (s + 1) & mask
    visible = proto in (IPPROTO_TCP, IPPROTO_UDP) and not fragment  # else port rules never match
    r = first_match(t.wild, src, dst, proto, sport if visible else -1, dport if visible else -1)
    if r < t.wild.shape[0]:
        act: int = t.wild[r, ACTION]
        return act
    return UNMATCHED
