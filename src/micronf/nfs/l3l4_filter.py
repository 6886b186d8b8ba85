"""L3L4Filter: an ordered allow/deny rule list over the IPv4 5-tuple (paper §VII-A3)."""

from __future__ import annotations

from enum import auto
from ipaddress import AddressValueError, IPv4Network, NetmaskValueError
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field, field_validator, model_validator

from micronf.dataplane.headers import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    ipv4_dst,
    ipv4_frag_offset,
    ipv4_proto,
    ipv4_src,
    l4_ports,
)
from micronf.nf import (
    Access,
    CounterArray,
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
)
from micronf.nfs.check_ip_header import IPV4_OK, ipv4_header_check
from micronf.nfs.check_ip_header import Drop as HeaderCheck

Action = Literal["allow", "deny"]


class Drop(DropReasons):
    denied = auto()
    non_ip = auto()
    malformed = auto()


class State(NamedTuple):
    rules: npt.NDArray[np.int64]  # [n_rules, _NCOLS]: the compiled rules
    policy: npt.NDArray[np.int64]  # [2]: the verdicts for no match, and for frames that are not IPv4

PROTOCOLS = {"icmp": IPPROTO_ICMP, "tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}

# Columns of the compiled rule table (one int64 row per rule).
_VERDICT = 0  # verdict on match: Out.out or Drop.denied
_SRC_NET, _SRC_MASK, _DST_NET, _DST_MASK = 1, 2, 3, 4
_PROTO = 5  # protocol number, -1 = any
_PORTS = 6  # 1 if the rule matches ports (then only packets with visible TCP/UDP ports match)
_SPORT_LO, _SPORT_HI, _DPORT_LO, _DPORT_HI = 7, 8, 9, 10
_NCOLS = 11


def _verdict(action: Action, deny: Drop = Drop.denied) -> int:
    """The kernel verdict of ``action``: pass on out, or the drop verdict ``deny``."""
    return int(Out.out if action == "allow" else deny)


def _network(value: str) -> IPv4Network:
    """``value`` ("any", an address or a CIDR prefix) as a network; "any" is 0.0.0.0/0."""
    return IPv4Network("0.0.0.0/0" if value == "any" else value)


def _port_range(value: str) -> tuple[int, int]:
    """``value`` ("any", "80" or "1000-2000") as an inclusive range; "any" is 0-65535."""
    if value == "any":
        return (0, 65535)
    lo, _, hi = value.partition("-")
    return (int(lo), int(hi or lo))


class Rule(NFConfig):
    """One filter rule: every given field must match; fields left at "any" match everything."""

    action: Action = Field(description="What to do with a matching packet: allow (pass on out) or deny (drop).")
    src: str = Field(default="any", description='Source prefix: "any", an address or CIDR like "10.0.0.0/8".')
    dst: str = Field(default="any", description='Destination prefix: "any", an address or CIDR like "10.0.0.0/8".')
    proto: str | int = Field(
        default="any", description='IP protocol: "any", "tcp", "udp", "icmp" or a number 0..255 (6 is "tcp").'
    )
    sport: str = Field(
        default="any", description='TCP/UDP source port: "any", a port like 80 or "80", or a range "1000-2000".'
    )
    dport: str = Field(
        default="any", description='TCP/UDP destination port: "any", a port like 80 or "80", or a range "1000-2000".'
    )

    @field_validator("src", "dst")
    @classmethod
    def _cidr(cls, v: str) -> str:
        text = v.strip().lower()
        if text == "any":
            return text
        try:
            return str(IPv4Network(text))
        except (AddressValueError, NetmaskValueError) as exc:
            raise ValueError(f'{v!r} is not "any", an IPv4 address or a CIDR prefix ({exc})') from None
        except ValueError:  # only left: host bits set
            fixed = IPv4Network(text, strict=False)
            raise ValueError(f"{v!r} has host bits set: did you mean {str(fixed)!r}?") from None

    @field_validator("proto", mode="before")
    @classmethod
    def _proto(cls, v: Any) -> str | int:
        text = str(v).strip().lower()
        if text.isdigit() and not isinstance(v, bool) and int(text) <= 255:
            number = int(text)
            return next((name for name, num in PROTOCOLS.items() if num == number), number)
        if text == "any" or text in PROTOCOLS:
            return text
        raise ValueError(f'{v!r} is not "any", "tcp", "udp", "icmp" or a protocol number 0..255')

    @field_validator("sport", "dport", mode="before")
    @classmethod
    def _ports(cls, v: Any) -> str:
        text = str(v).strip().lower()
        if text == "any":
            return text
        lo, sep, hi = (part.strip() for part in text.partition("-"))
        if isinstance(v, bool) or not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f'{v!r} is not "any", a port 0..65535 or a range "lo-hi"')
        a, b = int(lo), int(hi or lo)
        if not a <= b <= 65535:
            raise ValueError(f"{v!r} is not a port range within 0..65535, lowest first")
        return f"{a}-{b}" if sep else str(a)

    @model_validator(mode="after")
    def _ports_need_tcp_or_udp(self) -> Rule:
        if (self.sport != "any" or self.dport != "any") and self.proto not in ("any", "tcp", "udp"):
            raise ValueError(f"ports only exist for tcp and udp, but the rule has proto {self.proto!r}")
        return self

    def row(self) -> list[int]:
        """The rule as a row of the kernel's rule table (see the ``_*`` column indices)."""
        src, dst = _network(self.src), _network(self.dst)
        row = [0] * _NCOLS
        row[_VERDICT] = _verdict(self.action)
        row[_SRC_NET], row[_SRC_MASK] = int(src.network_address), int(src.netmask)
        row[_DST_NET], row[_DST_MASK] = int(dst.network_address), int(dst.netmask)
        row[_PROTO] = self.proto if isinstance(self.proto, int) else PROTOCOLS.get(self.proto, -1)
        row[_PORTS] = int(self.sport != "any" or self.dport != "any")
        row[_SPORT_LO], row[_SPORT_HI] = _port_range(self.sport)
        row[_DPORT_LO], row[_DPORT_HI] = _port_range(self.dport)
        return row


@njit(cache=True, nogil=True)
def _first_match(rules: npt.NDArray[np.int64], src: int, dst: int, proto: int, sport: int, dport: int) -> int:
    """Index of the first rule matching the packet, or ``len(rules)`` if none does; ports -1 = none visible."""
    n_rules: int = rules.shape[0]
    for r in range(n_rules):
        row = rules[r]
        if (src & row[_SRC_MASK]) != row[_SRC_NET] or (dst & row[_DST_MASK]) != row[_DST_NET]:
            continue
        if row[_PROTO] >= 0 and row[_PROTO] != proto:
            continue
        if row[_PORTS] != 0 and not (
            sport >= 0
            and row[_SPORT_LO] <= sport <= row[_SPORT_HI]
            and row[_DPORT_LO] <= dport <= row[_DPORT_HI]
        ):
            continue
        return r
    return n_rules


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: State,
           counters: CounterArray) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame and the rules per packet
    rules = borrowed(state.rules)
    default_verdict = state.policy[0]
    non_ip_verdict = state.policy[1]
    n_rules = rules.shape[0]
    hits = np.zeros(n_rules + 1, dtype=np.int64)  # per rule, then the default
    for i in range(n):
        f = pkt_frame(p, handles[i])
        status, l3, hlen = ipv4_header_check(f)
        if status != IPV4_OK:
            verdicts[i] = non_ip_verdict if status == HeaderCheck.not_ipv4 else Drop.malformed
            continue
        proto = ipv4_proto(f, l3)
        sport, dport = -1, -1
        if proto in (IPPROTO_TCP, IPPROTO_UDP) and ipv4_frag_offset(f, l3) == 0:
            sport, dport = l4_ports(f, l3 + hlen)  # (-1, -1) when cut off
        r = _first_match(rules, ipv4_src(f, l3), ipv4_dst(f, l3), proto, sport, dport)
        hits[r] += 1
        verdicts[i] = rules[r, _VERDICT] if r < n_rules else default_verdict
    for r in range(n_rules + 1):
        counters[r] += hits[r]


class L3L4Filter(MicroNF):
    """Allow or deny IPv4 packets by the first matching rule on addresses, protocol and ports.

    Config:
        rules: ordered list of rules, each ``{action: allow|deny, src, dst, proto, sport, dport}``
            where src/dst are "any", an address or a CIDR prefix, proto is "any", "tcp", "udp",
            "icmp" or a number 0..255, sport/dport are "any", a port or a range "lo-hi"
            (inclusive); omitted fields are "any". Ports require proto tcp, udp or any.
        default: action when no rule matches (default deny).
        non_ip: action for frames that are not IPv4, e.g. ARP or IPv6 (default deny).
    Ports:
        out: packets allowed by the first matching rule, or by the default; unchanged.
        drop:denied: packets denied by the first matching rule, or by the default.
        drop:non_ip: non-IPv4 frames (EtherType behind at most one 802.1Q tag), when non_ip is deny.
        drop:malformed: frames with an unusable IPv4 header (cut off, version not 4, IHL < 5,
            options past the end of the frame) or too short for an Ethernet header: rules cannot
            be applied to them, so they are always dropped.
    Counters:
        rule<i>: packets whose first matching rule was rules[i] (allowed or denied).
        default: IPv4 packets that matched no rule.
    Notes:
        First match wins. A rule with a port constraint matches only packets whose TCP/UDP ports
        are visible: TCP or UDP, unfragmented or the first fragment, with both ports inside the
        frame. Non-first fragments (no L4 header) and truncated L4 headers never match a port
        rule, only rules on addresses and protocol, so deny them by address/protocol or keep the
        default deny if that matters; ICMP has no ports. Both defaults fail closed: an IPv4 rule
        list that let IPv6 through would be bypassed by it. Rules compile to a table scanned
        linearly per packet: cost grows with the number of rules scanned before the match;
        counters are bumped once per batch.
    """

    class Config(NFConfig):
        """Config of L3L4Filter."""

        rules: list[Rule] = Field(
            default_factory=list, description="Ordered rules; the first one matching a packet decides."
        )
        default: Action = Field(default="deny", description="Action for IPv4 packets that match no rule.")
        non_ip: Action = Field(default="deny", description="Action for frames that are not IPv4 (ARP, IPv6, ...).")

    descriptor = Descriptor(l3=Access.READ, l4=Access.READ, may_drop=True)
    Drop = Drop
    config: Config
    kernel = kernel

    def state(self) -> State:
        rules = np.array([r.row() for r in self.config.rules], dtype=np.int64).reshape(-1, _NCOLS)
        policy = np.array([_verdict(self.config.default), _verdict(self.config.non_ip, Drop.non_ip)], dtype=np.int64)
        return State(rules, policy)

    def counter_names(self) -> tuple[str, ...]:
        return (*(f"rule{i}" for i in range(len(self.config.rules))), "default")
