"""L3L4Filter: an ordered allow/deny rule list over the IPv4 5-tuple (paper §VII-A3)."""

from __future__ import annotations

from enum import auto
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field

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
from micronf.packet.headers import IPPROTO_TCP, IPPROTO_UDP, ipv4_dst, ipv4_frag_offset, ipv4_proto, ipv4_src, l4_ports
from micronf.packet.rules import ACTION, Action, FlowRule, first_match, rule_table


class Drop(DropReasons):
    denied = auto()
    non_ip = auto()
    malformed = auto()


class State(NamedTuple):
    rules: npt.NDArray[np.int64]  # the compiled rules (micronf.packet.rules.rule_table)
    policy: npt.NDArray[np.int64]  # [2]: the verdicts for no match, and for frames that are not IPv4


def _verdict(action: Action, deny: Drop = Drop.denied) -> int:
    """The kernel verdict of ``action``: pass on out, or the drop verdict ``deny``."""
    return int(Out.out if action == "allow" else deny)


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
        r = first_match(rules, ipv4_src(f, l3), ipv4_dst(f, l3), proto, sport, dport)
        hits[r] += 1
        verdicts[i] = rules[r, ACTION] if r < n_rules else default_verdict
    for r in range(n_rules + 1):
        counters[r] += hits[r]


class L3L4Filter(MicroNF):
    """Allow or deny IPv4 packets by the first matching rule on addresses, protocol and ports.

    Config:
        rules: ordered list of rules, each ``{action: allow|deny, src, dst, proto, sport, dport}``
            where src/dst are "any", an address or a CIDR prefix, proto is "any", "tcp", "udp",
            "icmp" or a number 0..255, sport/dport are "any", a port or a range "lo-hi"
            (inclusive); omitted fields are "any", an omitted action is allow. Ports require
            proto tcp, udp or any. The same rule syntax as the Rx service's ``rules``
            (:mod:`micronf.packet.rules`).
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

        rules: list[FlowRule] = Field(
            default_factory=list, description="Ordered rules; the first one matching a packet decides."
        )
        default: Action = Field(default="deny", description="Action for IPv4 packets that match no rule.")
        non_ip: Action = Field(default="deny", description="Action for frames that are not IPv4 (ARP, IPv6, ...).")

    descriptor = Descriptor(l3=Access.READ, l4=Access.READ, may_drop=True)
    Drop = Drop
    config: Config
    kernel = kernel

    def state(self) -> State:
        rules = rule_table(self.config.rules, Out.out, Drop.denied)
        policy = np.array([_verdict(self.config.default), _verdict(self.config.non_ip, Drop.non_ip)], dtype=np.int64)
        return State(rules, policy)

    def counter_names(self) -> tuple[str, ...]:
        return (*(f"rule{i}" for i in range(len(self.config.rules))), "default")
