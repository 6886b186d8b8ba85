"""FlowLoadBalancer: send each flow to one of N backends by rewriting its destination (sticky, consistent)."""

from __future__ import annotations

import re
from enum import auto
from ipaddress import IPv4Address
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field, field_validator

from micronf.nf import (
    M_HASH,
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
from micronf.packet.checksum import csum_update16
from micronf.packet.flowhash import flow_hash, flow_hash_symmetric, jump_hash
from micronf.packet.headers import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    ipv4_dst,
    ipv4_is_fragment,
    ipv4_proto,
    ipv4_src,
    rd16,
    wr16,
)


class Drop(DropReasons):
    not_ipv4 = auto()
    bad_header = auto()
    truncated = auto()


class State(NamedTuple):
    ips: npt.NDArray[np.int64]  # per backend: its IPv4 address
    macs: npt.NDArray[np.int64]  # [n_backends, 6]; a row of -1 = keep the destination MAC
    symmetric: npt.NDArray[np.int64]  # [1]: 1 to hash both directions alike

_TCP_CSUM = 16  # offset of the checksum in the TCP header
_UDP_CSUM = 6  # ... in the UDP header
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")



@njit(cache=True, nogil=True)
def _rewrite16(f: npt.NDArray[np.uint8], off: int, new: int, csum_at: int, csum2_at: int, udp: bool) -> None:
    """Store ``new`` at ``off`` and patch the checksums at ``csum_at`` and (if >= 0) ``csum2_at``.

    ``udp``: the second checksum is UDP's, where 0 means "none" and stays 0, and a computed 0 is
    sent as 0xFFFF (RFC 768).
    """
    old = rd16(f, off)
    wr16(f, csum_at, csum_update16(rd16(f, csum_at), old, new))
    if csum2_at >= 0:
        c = rd16(f, csum2_at)
        if not (udp and c == 0):
            c = csum_update16(c, old, new)
            wr16(f, csum2_at, 0xFFFF if udp and c == 0 else c)
    wr16(f, off, new)


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: State,
           counters: CounterArray) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame and the tables per packet
    ips = borrowed(state.ips)
    macs = borrowed(state.macs)
    symmetric = state.symmetric[0] != 0
    n_backends = ips.shape[0]
    per_backend = np.zeros(n_backends, dtype=np.int64)
    for i in range(n):
        h = handles[i]
        f = pkt_frame(p, h)
        status, l3, hlen = ipv4_header_check(f)
        if status != IPV4_OK:
            verdicts[i] = Drop.not_ipv4 if status == HeaderCheck.not_ipv4 else Drop.bad_header
            continue
        proto = ipv4_proto(f, l3)
        l4 = l3 + hlen
        l4_csum = -1  # offset of the TCP/UDP checksum, if this packet carries the L4 header
        if (rd16(f, l3 + 6) & 0x1FFF) == 0:
            if proto == IPPROTO_TCP:
                l4_csum = l4 + _TCP_CSUM
            elif proto == IPPROTO_UDP:
                l4_csum = l4 + _UDP_CSUM
        if l4_csum + 2 > f.shape[0]:
            verdicts[i] = Drop.truncated
            continue
        hsh = int(np.int64(p.words[h, M_HASH]))  # int(uint32) would be uint64 in numba
        if hsh == 0:
            sport, dport = 0, 0
            if l4_csum >= 0 and not ipv4_is_fragment(f, l3):  # fragments hash on addresses only
                sport, dport = rd16(f, l4), rd16(f, l4 + 2)
            src, dst = ipv4_src(f, l3), ipv4_dst(f, l3)
            if symmetric:
                hsh = flow_hash_symmetric(src, dst, proto, sport, dport)
            else:
                hsh = flow_hash(src, dst, proto, sport, dport)
            p.words[h, M_HASH] = hsh
        b = jump_hash(hsh, n_backends)
        per_backend[b] += 1
        ip = ips[b]
        udp = proto == IPPROTO_UDP
        _rewrite16(f, l3 + 16, ip >> 16, l3 + 10, l4_csum, udp)
        _rewrite16(f, l3 + 18, ip & 0xFFFF, l3 + 10, l4_csum, udp)
        if macs[b, 0] >= 0:
            for j in range(6):
                f[j] = macs[b, j]
        verdicts[i] = Out.out
    for b in range(n_backends):
        counters[b] += per_backend[b]


class Backend(NFConfig):
    """One backend server."""

    ip: IPv4Address = Field(description="Address written into the destination IP of the flows sent to it.")
    mac: str | None = Field(
        default=None,
        description='Destination MAC to write, "aa:bb:cc:dd:ee:ff" or with dashes; none keeps the frame\'s.',
    )

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is None:
            return v
        text = v.strip().lower()
        if not _MAC_RE.match(text):
            raise ValueError(f"{v!r} is not a MAC address like 02:00:00:00:00:01 (six hex octets)")
        return text.replace("-", ":")


class FlowLoadBalancer(MicroNF):
    """Spread flows over backends: each flow's destination IP (and MAC) is rewritten to its backend.

    Config:
        backends: the backends, at least one, each ``{ip, mac}`` (mac optional). A backend listed
            twice gets twice the share.
        symmetric: hash both directions of a connection alike (default false).
    Ports:
        out: IPv4 packets, destination rewritten to the flow's backend, checksums updated.
        drop:not_ipv4: EtherType (behind at most one 802.1Q tag) is not IPv4 (ARP, IPv6, ...):
            there is no IPv4 destination to balance.
        drop:bad_header: an IPv4 frame whose header is unusable: cut off, version not 4, IHL < 5
            or options running past the end of the frame.
        drop:truncated: a TCP/UDP packet (unfragmented or first fragment) cut off before its
            checksum field, which could then not be kept right.
    Counters:
        backend<i>: packets sent to backends[i].
    Notes:
        The backend is the jump consistent hash (Lamping & Veach 2014) of the flow hash, so a
        flow always lands on the same backend without any flow table, and adding a backend at the
        end of the list moves only ~1/(N+1) of the flows (all to the new one); removing one from
        the middle reshuffles more, so grow and shrink at the end. The flow hash is the packet's
        M_HASH metadata when an earlier µNF set it (trusted as is, also when ``symmetric``);
        otherwise it is headers' murmur3 flow hash of (src, dst, proto, sport, dport) and is
        stored in M_HASH. All fragments (MF set or offset > 0) hash with ports 0, so every
        fragment of a datagram goes to the same backend. The IPv4 checksum and, in packets that
        carry the L4 header, the TCP/UDP checksum (its pseudo-header holds the destination) are
        updated incrementally (RFC 1624); a UDP checksum of 0 (none) stays 0; other protocols'
        checksums (ICMP has no pseudo-header) are left alone. Source addresses are untouched
        (no SNAT): replies come back from the backend's address. Stateless; one 802.1Q tag is
        looked through. Cost: one 16-byte hash unless M_HASH is set, a few jump-hash rounds
        (~ln N), two incremental checksum updates per checksum; counters bumped per batch.
    """

    class Config(NFConfig):
        """Config of FlowLoadBalancer."""

        backends: list[Backend] = Field(
            min_length=1, description="Backends, in a stable order: append new ones at the end."
        )
        symmetric: bool = Field(
            default=False, description="Hash both directions of a connection to the same backend."
        )

    descriptor = Descriptor(l2=Access.WRITE, l3=Access.WRITE, l4=Access.WRITE, may_drop=True)
    Drop = Drop
    config: Config
    kernel = kernel

    def state(self) -> State:
        backends = self.config.backends
        macs = np.full((len(backends), 6), -1, dtype=np.int64)
        for i, b in enumerate(backends):
            if b.mac is not None:
                macs[i] = [int(octet, 16) for octet in b.mac.split(":")]
        return State(
            ips=np.array([int(b.ip) for b in backends], dtype=np.int64),
            macs=macs,
            symmetric=np.array([int(self.config.symmetric)], dtype=np.int64),
        )

    def counter_names(self) -> tuple[str, ...]:
        return tuple(f"backend{i}" for i in range(len(self.config.backends)))
