"""5-tuple classification of the Rx service: exact rules by hash, wildcard rules in order.

Why two kinds: an operator steering a few known flows into a graph writes exact rules (all five
fields, host addresses, single ports), and there may be many of them — they live in an
open-addressing hash table, one probe sequence per packet whatever their number. Prefix and range
rules (``10.0.0.0/8``, ``dport 80``) are few and ordered: they are checked one by one, first match
wins. An exact match wins over any wildcard rule. With no rules at all every packet is accepted.

Everything a kernel needs is in :class:`RuleTables` (plain int64 arrays); :func:`classify_frame`
runs inside the Rx burst kernel.
"""

from __future__ import annotations

import ipaddress
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, field_validator

from micronf.dataplane.headers import Frame, five_tuple_values

ACCEPT, DROP, UNMATCHED = 0, 1, 2
PROTOS = {"icmp": 1, "tcp": 6, "udp": 17}
# wildcard rule columns
W_SRC, W_SRC_MASK, W_DST, W_DST_MASK, W_PROTO, W_SP_LO, W_SP_HI, W_DP_LO, W_DP_HI, W_ACTION = range(10)
W_COLS = 10
EMPTY = -1  # an unused hash-table slot (no real key is negative)

I64 = npt.NDArray[np.int64]


class FlowRule(BaseModel):
    """A 5-tuple classification rule of the Rx service; omitted fields are wildcards.

    A rule whose fields are all given with host prefixes and single ports is an *exact* rule
    (looked up by hash); any other is a *wildcard* rule (checked in order). Rules decide which
    packets from the Rx backend enter this graph: ``accept`` sends them to the entry µNF,
    ``drop`` counts them as ``rx_rule_drop``. A packet no rule matches is counted as ``unmatched``
    (with no rules at all, every packet is accepted).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    src: str | None = Field(None, description="source IPv4 prefix, e.g. 10.0.0.0/8 or 10.0.0.1")
    dst: str | None = Field(None, description="destination IPv4 prefix")
    proto: Literal["tcp", "udp", "icmp"] | int | None = Field(None, description="IP protocol (name or number)")
    sport: int | tuple[int, int] | None = Field(None, description="source port or inclusive range [lo, hi]")
    dport: int | tuple[int, int] | None = Field(None, description="destination port or inclusive range [lo, hi]")
    action: Literal["accept", "drop"] = "accept"

    @field_validator("src", "dst")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            net = ipaddress.IPv4Network(v, strict=False)
        except ValueError as exc:
            raise ValueError(f"not an IPv4 address or prefix: {v!r} ({exc})") from None
        return str(net)

    @field_validator("proto")
    @classmethod
    def _proto(cls, v: str | int | None) -> str | int | None:
        if isinstance(v, int) and not 0 <= v <= 255:
            raise ValueError(f"IP protocol must be 0..255, got {v}")
        return v

    @field_validator("sport", "dport")
    @classmethod
    def _port(cls, v: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        if v is None:
            return v
        lo, hi = (v, v) if isinstance(v, int) else v
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"port range must satisfy 0 <= lo <= hi <= 65535, got {v}")
        return v


class RuleTables(NamedTuple):
    """Compiled rules: ``wild`` [n, W_COLS]; exact keys (two int64 halves) and actions in a table of
    power-of-two size; ``any_rules`` 0 means accept everything."""

    wild: I64
    key_a: I64
    key_b: I64
    action: I64
    any_rules: int


def _ports(v: int | tuple[int, int] | None) -> tuple[int, int]:
    if v is None:
        return 0, 65535
    return (v, v) if isinstance(v, int) else v


def _is_exact(r: FlowRule) -> bool:
    return (r.src is not None and r.src.endswith("/32") and r.dst is not None and r.dst.endswith("/32")
            and r.proto is not None and isinstance(r.sport, int) and isinstance(r.dport, int))


def _key(src: int, dst: int, proto: int, sport: int, dport: int) -> tuple[int, int]:
    return (src << 32) | dst, (proto << 32) | (sport << 16) | dport


@njit(cache=True, nogil=True)
def _slot(a: int, b: int, mask: int) -> int:
    h = (a * 0x1E3779B97F4A7C15 + b * 0x42B2AE3D27D4EB4F) & 0x7FFFFFFFFFFFFFFF
    return (h >> 17) & mask


def compile_rules(rules: list[FlowRule]) -> RuleTables:
    """Turn validated rules into the arrays the Rx kernel reads."""
    exact = [r for r in rules if _is_exact(r)]
    wild = [r for r in rules if not _is_exact(r)]
    table = np.full((len(wild), W_COLS), 0, dtype=np.int64)
    for i, r in enumerate(wild):
        for col, prefix in ((W_SRC, r.src), (W_DST, r.dst)):
            net = ipaddress.IPv4Network(prefix or "0.0.0.0/0")
            table[i, col] = int(net.network_address)
            table[i, col + 1] = int(net.netmask)
        table[i, W_PROTO] = -1 if r.proto is None else PROTOS.get(str(r.proto), r.proto)
        table[i, W_SP_LO], table[i, W_SP_HI] = _ports(r.sport)
        table[i, W_DP_LO], table[i, W_DP_HI] = _ports(r.dport)
        table[i, W_ACTION] = DROP if r.action == "drop" else ACCEPT
    size = 16
    while size < 2 * len(exact):
        size *= 2
    key_a = np.full(size, EMPTY, dtype=np.int64)
    key_b = np.full(size, EMPTY, dtype=np.int64)
    action = np.zeros(size, dtype=np.int64)
    for r in exact:
        proto = PROTOS.get(str(r.proto), r.proto)
        assert isinstance(proto, int) and r.src and r.dst and isinstance(r.sport, int) and isinstance(r.dport, int)
        src, dst = (int(ipaddress.IPv4Network(x).network_address) for x in (r.src, r.dst))
        a, b = _key(src, dst, proto, r.sport, r.dport)
        s = int(_slot(a, b, size - 1))
        while key_a[s] != EMPTY and not (key_a[s] == a and key_b[s] == b):
            s = (s + 1) & (size - 1)
        if key_a[s] == EMPTY:  # a repeated exact rule keeps the first one's action
            key_a[s], key_b[s], action[s] = a, b, DROP if r.action == "drop" else ACCEPT
    return RuleTables(table, key_a, key_b, action, int(bool(rules)))


@njit(cache=True, nogil=True)
def classify_frame(frame: Frame, t: RuleTables) -> int:
    """ACCEPT, DROP or UNMATCHED for one frame."""
    if t.any_rules == 0:
        return ACCEPT
    ok, src, dst, proto, sport, dport = five_tuple_values(frame)
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
    for i in range(t.wild.shape[0]):
        w = t.wild[i]
        if ((src & w[W_SRC_MASK]) == w[W_SRC] and (dst & w[W_DST_MASK]) == w[W_DST]
                and (w[W_PROTO] < 0 or w[W_PROTO] == proto)
                and w[W_SP_LO] <= sport <= w[W_SP_HI] and w[W_DP_LO] <= dport <= w[W_DP_HI]):
            act: int = w[W_ACTION]
            return act
    return UNMATCHED
