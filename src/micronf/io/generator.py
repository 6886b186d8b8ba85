"""Synthetic traffic: a finite set of template frames, built once, replayed as Rx batches.

Why templates: the Rx service asks for up to tens of millions of frames per second, so nothing
may be built per frame. :func:`build_templates` builds every distinct frame once (headers, IPv4
and TCP/UDP checksums, HTTP request payloads) with numpy and one numba kernel, into one
contiguous :class:`~micronf.io.pcap.Trace`; :class:`GeneratorRx` then hands out windows of it
like a pcap replay (:class:`~micronf.io.replay.FrameReplay`: views, no copy), limited by
``count`` and paced by a token bucket when ``rate_pps`` is set. The templates are a trace, so
``PcapWriter.write_trace`` dumps them for Wireshark.

Composition, exact over one cycle of templates
----------------------------------------------
Every template is one packet *kind*: ``http`` (a TCP segment to port 80 whose payload is
``GET <url> HTTP/1.1\\r\\nHost: <host>\\r\\n\\r\\n`` padded with zero bytes), ``tcp`` (other TCP)
or ``udp``, with random payload bytes. The number of templates of each kind, size and URL is
the weights' exact share of the cycle (largest-remainder apportionment, so 20% of 1000 templates
is exactly 200), and every positive weight gets at least one template (or the spec is rejected:
raise ``templates``). Kinds and weighted sizes/URLs are placed in a seeded random order;
unweighted sizes go round-robin. :class:`Composition` (``GeneratorRx.describe()``) records, per
template, its kind, URL, requested size, real length and flow, so a benchmark computes exactly
how many frames of each sort any ``count`` yields.

An HTTP request longer than its chosen size grows the frame to fit (``Composition.grown``
counts them); a request that would not fit in 1514 bytes is a spec error.

Flows
-----
``flows`` distinct 5-tuples. Each flow has one kind (a 5-tuple cannot be both TCP and UDP), so
flows are shared among the kinds in proportion to their templates, at least one each, and a
kind's templates visit its flows round-robin. Addresses come from ``src_net``/``dst_net``
(host addresses; a /16 gives 65534), source ports from 1024-65535, destination ports are 80 for
HTTP and random in 1024-65535 otherwise; (src, dst, sport) is unique per flow.

Paper traffic
-------------
:func:`paper_traffic` is the benchmark mix of the µNF paper (§VII): 200-byte HTTP GETs, 20% of
them with SQL-injection URLs (:data:`PAPER_SQLI_URLS`, each matched by
``micronf.packet.sqli.SQLI_SIGNATURES``), 80% benign (:data:`PAPER_BENIGN_URLS`, none matched).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from micronf.io.backend import I32, I64, U8, FrameBatch
from micronf.io.pcap import Trace
from micronf.io.replay import Clock, FrameReplay
from micronf.io.sequence import stamp_frames
from micronf.packet.checksum import csum_finish, ipv4_checksum, sum16

__all__ = [
    "IMIX",
    "KINDS",
    "MAX_TEMPLATES",
    "PAPER_BENIGN_URLS",
    "PAPER_SQLI_URLS",
    "Composition",
    "GeneratorRx",
    "GeneratorSpec",
    "TokenBucket",
    "build_templates",
    "http_request",
    "paper_traffic",
]

KINDS: tuple[str, ...] = ("http", "tcp", "udp")
"""Packet kinds, in the order of :attr:`Composition.kind` codes (0, 1, 2)."""
_HTTP, _TCP, _UDP = 0, 1, 2

IMIX: tuple[tuple[int, int], ...] = ((60, 7), (590, 4), (1514, 1))
"""The simple IMIX (7:4:1 of 64, 594 and 1518 bytes on the wire) as (size without FCS, weight)."""

MIN_FRAME, MAX_FRAME = 60, 1514  # Ethernet without FCS
MAX_TEMPLATES = 1 << 20
MAX_TEMPLATE_BYTES = 256 << 20
_HDR_TCP = 14 + 20 + 20  # Ethernet + IPv4 + TCP (no options)
_HDR_UDP = 14 + 20 + 8
_PORT_LO = 1024
_N_PORTS = 65536 - _PORT_LO
_MAC_PATTERN = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
_DENOMINATOR = 10**6  # weights are read as fractions with this resolution (0.2 is exactly 1/5)
L4 = Literal["tcp", "udp"]


def _tcp_only() -> dict[L4, float]:
    return {"tcp": 1.0}


def http_request(url: str, host: str) -> bytes:
    """The payload of an HTTP template: ``GET <url> HTTP/1.1\\r\\nHost: <host>\\r\\n\\r\\n``."""
    return f"GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("ascii")


def _hosts(net: ipaddress.IPv4Network) -> tuple[int, int]:
    """``(first host address as int, number of hosts)``: network and broadcast excluded below /31."""
    if net.prefixlen >= 31:
        return int(net.network_address), net.num_addresses
    return int(net.network_address) + 1, net.num_addresses - 2


def _apportion(total: int, weights: Sequence[float | Fraction]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` by largest remainder (ties: lower index first).

    Weights are read as fractions with denominators up to 10^6, so shares like 0.2 are exact.
    """
    fr = [Fraction(w).limit_denominator(_DENOMINATOR) for w in weights]
    s = sum(fr)
    quotas = [total * f / s for f in fr]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(fr)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _apportion_each(total: int, weights: Sequence[float | Fraction], what: str, names: Sequence[str]) -> list[int]:
    """:func:`_apportion`, refusing a positive weight that gets nothing (it would silently vanish)."""
    counts = _apportion(total, weights)
    whole = float(sum(weights))
    for name, w, c in zip(names, weights, counts, strict=True):
        if w > 0 and c == 0:
            raise ValueError(
                f"{what} {name!r} (share {float(w) / whole:.3g}) gets no template out of {total}: "
                "raise `templates` or its weight"
            )
    return counts


def _share_flows(flows: int, counts: Sequence[int]) -> list[int]:
    """Flows per kind: one for each kind present, the rest in proportion to its other templates.

    So a kind never has more flows than templates (each flow gets at least one template) and the
    number of distinct 5-tuples is exactly ``flows``.
    """
    present = [i for i, c in enumerate(counts) if c > 0]
    if flows < len(present):
        names = ", ".join(KINDS[i] for i in present)
        raise ValueError(f"flows={flows} is too few for {len(present)} packet kinds ({names}): a 5-tuple has one kind")
    share = [0] * len(counts)
    for i in present:
        share[i] = 1
    spare = flows - len(present)
    if spare:
        room = [max(counts[i] - 1, 0) for i in range(len(counts))]
        extra = _apportion(spare, room)  # extra[i] <= room[i] since spare <= sum(room)
        share = [s + e for s, e in zip(share, extra, strict=True)]
    return share


class GeneratorSpec(BaseModel):
    """Synthetic traffic: a cycle of template frames (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["generator"] = "generator"
    sizes: tuple[int, ...] | Literal["imix"] = Field(
        default=(60,),
        description="Frame sizes in bytes, Ethernet header included, FCS excluded (60..1514), or 'imix' "
        "(60/590/1514 at 7:4:1). Without size_weights they are used round-robin.",
    )
    size_weights: tuple[float, ...] | None = Field(
        default=None, description="Relative weight of each size (same length as sizes); None = round-robin."
    )
    flows: int = Field(default=16, ge=1, description="Number of distinct 5-tuples.")
    src_net: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.0.0.0/16"), description="Source addresses are hosts of this network."
    )
    dst_net: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.1.0.0/16"), description="Destination addresses are hosts of this network."
    )
    protocols: dict[L4, float] = Field(
        default_factory=_tcp_only,
        description="Relative weights of TCP and UDP packets (HTTP packets count as TCP).",
    )
    http_fraction: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Fraction of all packets that are HTTP GET requests (TCP to port 80)."
    )
    urls: tuple[str, ...] = Field(
        default=(), description="Request-targets of the HTTP GETs, URL-encoded (no spaces), e.g. '/a?q=x+y'."
    )
    url_weights: tuple[float, ...] | None = Field(
        default=None, description="Relative weight of each URL (same length as urls); None = equal."
    )
    host: str = Field(default="example.com", min_length=1, description="The Host header of HTTP requests.")
    count: int | None = Field(default=None, ge=0, description="Total frames to generate; None = endless.")
    rate_pps: float | None = Field(
        default=None, ge=0.001, description="Frames per second (token bucket); None = as fast as asked."
    )
    burst: int | None = Field(
        default=None, ge=1, description="Token bucket size in frames; None = 10 ms worth of rate_pps (at least 1)."
    )
    templates: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TEMPLATES,
        description="Number of distinct template frames (the cycle length); None = the smallest multiple of "
        "1000 holding every flow (so percentages are exact).",
    )
    seed: int = Field(default=0, ge=0, description="Seed of every random choice (addresses, ports, order, payload).")
    sequence: bool = Field(
        default=False,
        description="Stamp frame j (counted over the whole run) with j as a 64-bit number: in the TCP seq/ack "
        "fields, the first 8 UDP payload bytes (checksums updated); the seqcheck Tx output checks it.",
    )
    src_mac: str = Field(default="02:00:00:00:00:01", pattern=_MAC_PATTERN, description="Source MAC address.")
    dst_mac: str = Field(default="02:00:00:00:00:02", pattern=_MAC_PATTERN, description="Destination MAC address.")

    @field_validator("sizes")
    @classmethod
    def _sizes_in_range(cls, v: tuple[int, ...] | str) -> tuple[int, ...] | str:
        if isinstance(v, tuple):
            if not v:
                raise ValueError("give at least one frame size")
            bad = [s for s in v if not MIN_FRAME <= s <= MAX_FRAME]
            if bad:
                raise ValueError(
                    f"frame sizes {bad} outside {MIN_FRAME}..{MAX_FRAME} (bytes incl. the 14-byte Ethernet "
                    "header, without FCS)"
                )
        return v

    @field_validator("urls")
    @classmethod
    def _urls_are_request_targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for url in v:
            if not url or not url.isascii() or not url.isprintable() or " " in url:
                raise ValueError(
                    f"URL {url!r} must be non-empty printable ASCII without spaces (URL-encode them: %20 or +)"
                )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> GeneratorSpec:
        self._check_weights("size_weights", self.size_weights, len(self.size_list))
        if self.size_weights is not None and self.sizes == "imix":
            raise ValueError("size_weights cannot be combined with sizes='imix' (it has its own weights)")
        self._check_weights("url_weights", self.url_weights, len(self.urls))
        if any(w < 0 for w in self.protocols.values()) or not sum(self.protocols.values()) > 0:
            raise ValueError(f"protocols weights must be >= 0 with a positive sum, got {self.protocols}")
        if self.http_fraction > 0 and not self.urls:
            raise ValueError("http_fraction > 0 needs at least one URL in urls")
        longest = max((len(http_request(u, self.host)) for u in self.urls), default=0)
        if _HDR_TCP + longest > MAX_FRAME:
            raise ValueError(f"an HTTP request of {longest} bytes does not fit in a {MAX_FRAME}-byte frame")
        n = self.n_templates
        if self.flows > n:
            raise ValueError(f"flows={self.flows} exceeds templates={n}: every flow needs at least one template")
        flow_space = _hosts(self.src_net)[1] * _hosts(self.dst_net)[1] * _N_PORTS
        if self.flows > flow_space:
            raise ValueError(f"flows={self.flows} exceeds the {flow_space} (src, dst, sport) combinations of the nets")
        if n > MAX_TEMPLATES:
            raise ValueError(f"flows={self.flows} needs {n} templates, more than {MAX_TEMPLATES}")
        biggest = max(_HDR_TCP + longest, *self.size_list)
        if n * biggest > MAX_TEMPLATE_BYTES:
            raise ValueError(f"templates={n} of up to {biggest} bytes exceed {MAX_TEMPLATE_BYTES >> 20} MiB")
        _share_flows(self.flows, self.kind_counts())  # raises when infeasible
        return self

    @staticmethod
    def _check_weights(name: str, weights: tuple[float, ...] | None, n: int) -> None:
        if weights is None:
            return
        if len(weights) != n:
            raise ValueError(f"{name} has {len(weights)} entries for {n} values")
        if any(not w >= 0 for w in weights) or not sum(weights) > 0:
            raise ValueError(f"{name} must be >= 0 with a positive sum, got {list(weights)}")

    @property
    def size_list(self) -> tuple[int, ...]:
        """The frame sizes (``imix`` expanded)."""
        return tuple(s for s, _ in IMIX) if self.sizes == "imix" else self.sizes

    @property
    def size_weight_list(self) -> tuple[float, ...] | None:
        """The size weights (``imix`` expanded); None = round-robin."""
        return tuple(float(w) for _, w in IMIX) if self.sizes == "imix" else self.size_weights

    @property
    def n_templates(self) -> int:
        """The cycle length: ``templates``, or the smallest multiple of 1000 >= ``flows``."""
        return self.templates if self.templates is not None else 1000 * max(1, -(-self.flows // 1000))

    def kind_counts(self) -> list[int]:
        """Templates per kind (:data:`KINDS` order), exact shares of the cycle."""
        tcp = Fraction(self.protocols.get("tcp", 0.0)).limit_denominator(_DENOMINATOR)
        udp = Fraction(self.protocols.get("udp", 0.0)).limit_denominator(_DENOMINATOR)
        http = Fraction(self.http_fraction).limit_denominator(_DENOMINATOR)
        tcp_share = tcp / (tcp + udp)
        if http > tcp_share:
            raise ValueError(f"http_fraction={self.http_fraction} exceeds the TCP share {float(tcp_share):g}")
        return _apportion_each(self.n_templates, [http, tcp_share - http, 1 - tcp_share], "packet kind", KINDS)


@dataclass(frozen=True, eq=False)
class Composition:
    """What each template is; template ``i`` is frame ``i`` of the generator's cycle.

    Per template: ``kind`` (index into :data:`KINDS`), ``url`` (index into ``urls``, -1 when not
    HTTP), ``size`` (requested), ``length`` (real: larger when an HTTP request grew the frame),
    ``flow`` (index into the flow table). Per flow: ``src_ip``, ``dst_ip`` (IPv4 as integers),
    ``proto`` (6/17), ``sport``, ``dport``.
    """

    kind: npt.NDArray[np.int8]
    url: I32
    size: I32
    length: I32
    flow: I32
    urls: tuple[str, ...]
    src_ip: I64
    dst_ip: I64
    proto: I64
    sport: I64
    dport: I64

    @property
    def templates(self) -> int:
        """The cycle length."""
        return int(self.kind.shape[0])

    @property
    def grown(self) -> int:
        """Templates longer than their requested size (an HTTP request that did not fit)."""
        return int(np.count_nonzero(self.length > self.size))

    def over(self, mask: npt.NDArray[np.bool_], frames: int) -> int:
        """How many of the first ``frames`` generated frames are templates selected by ``mask``."""
        cycles, rest = divmod(frames, self.templates)
        return cycles * int(np.count_nonzero(mask)) + int(np.count_nonzero(mask[:rest]))

    def summary(self) -> dict[str, object]:
        """Counts per kind, URL and size over one cycle, as plain JSON-able values."""
        sizes, size_n = np.unique(self.size, return_counts=True)
        return {
            "templates": self.templates,
            "flows": int(self.src_ip.shape[0]),
            "kinds": {k: int(np.count_nonzero(self.kind == i)) for i, k in enumerate(KINDS)},
            "urls": {u: int(np.count_nonzero(self.url == i)) for i, u in enumerate(self.urls)},
            "sizes": {int(s): int(c) for s, c in zip(sizes, size_n, strict=True)},
            "grown": self.grown,
            "bytes": int(self.length.astype(np.int64).sum()),
        }


def _placed(rng: np.random.Generator, counts: Sequence[int]) -> npt.NDArray[np.int64]:
    """Value ``v`` repeated ``counts[v]`` times, in random order."""
    return rng.permutation(np.repeat(np.arange(len(counts), dtype=np.int64), counts))


def _unique_keys(rng: np.random.Generator, n: int, space: int) -> npt.NDArray[np.int64]:
    """``n`` distinct random integers in ``[0, space)``, in random order."""
    if 2 * n > space:  # dense: a permutation is cheap (space < 2 * MAX_TEMPLATES)
        return rng.permutation(space)[:n].astype(np.int64)
    keys = np.unique(rng.integers(0, space, size=n, dtype=np.int64))
    while keys.shape[0] < n:  # rarely more than one round: collisions are few when n <= space / 2
        keys = np.unique(np.concatenate([keys, rng.integers(0, space, size=n, dtype=np.int64)]))
    return rng.permutation(keys)[:n]  # permute before cutting: keys are sorted


@njit(cache=True, nogil=True)
def _put(buf: U8, pos: int, value: int, nbytes: int) -> None:
    """Store ``value`` big-endian in ``nbytes`` bytes at ``pos``."""
    for k in range(nbytes):
        buf[pos + k] = (value >> (8 * (nbytes - 1 - k))) & 0xFF


@njit(cache=True, nogil=True)
def _write_templates(
    data: U8,
    off: I64,
    length: I32,
    kind: I64,
    url: I64,
    flow: I64,
    seq: I64,
    macs: U8,
    src_ip: I64,
    dst_ip: I64,
    sport: I64,
    dport: I64,
    req: U8,
    req_off: I64,
    req_len: I64,
) -> None:
    """Write Ethernet/IPv4/L4 headers, HTTP payloads and checksums over pre-filled payload bytes.

    Template ``i`` occupies ``data[off[i] : off[i] + length[i]]``; the bytes after the headers
    already hold random payload, which HTTP templates replace by their request and zero padding.
    """
    for i in range(off.shape[0]):
        o = off[i]
        ln = int(length[i])
        f = flow[i]
        k = kind[i]
        data[o : o + 12] = macs
        _put(data, o + 12, 0x0800, 2)
        ip = o + 14
        proto = 17 if k == _UDP else 6
        _put(data, ip, 0x45000000 | (ln - 14), 4)  # version 4, IHL 5, TOS 0, total length
        _put(data, ip + 4, ((i & 0xFFFF) << 16) | 0x4000, 4)  # identification, DF
        _put(data, ip + 8, (64 << 24) | (proto << 16), 4)  # TTL 64, protocol, checksum 0
        _put(data, ip + 12, src_ip[f], 4)
        _put(data, ip + 16, dst_ip[f], 4)
        _put(data, ip + 10, ipv4_checksum(data, ip, 20), 2)
        l4 = ip + 20
        l4_len = ln - 34
        _put(data, l4, (sport[f] << 16) | dport[f], 4)
        if k == _UDP:
            _put(data, l4 + 4, l4_len << 16, 4)  # length, checksum 0
            csum_at = l4 + 6
        else:
            _put(data, l4 + 4, seq[i], 4)
            _put(data, l4 + 8, seq[i] ^ 0x5A5A5A5A, 4)  # ack: any value, derived to stay reproducible
            _put(data, l4 + 12, (5 << 28) | (0x18 << 16) | 64240, 4)  # data offset 5, PSH|ACK, window
            _put(data, l4 + 16, 0, 4)  # checksum 0, urgent pointer 0
            csum_at = l4 + 16
            if k == _HTTP:
                pay = l4 + 20
                u = url[i]
                n = req_len[u]
                data[pay : pay + n] = req[req_off[u] : req_off[u] + n]
                data[pay + n : o + ln] = 0
        pseudo = (src_ip[f] >> 16) + (src_ip[f] & 0xFFFF) + (dst_ip[f] >> 16) + (dst_ip[f] & 0xFFFF) + proto + l4_len
        c = csum_finish(sum16(data, l4, l4_len, -1) + pseudo)
        if k == _UDP and c == 0:
            c = 0xFFFF  # RFC 768: a computed 0 is sent as all ones (0 means "no checksum")
        _put(data, csum_at, c, 2)


def build_templates(spec: GeneratorSpec) -> tuple[Trace, Composition]:
    """Every template frame of ``spec`` (timestamps 0) and what each one is."""
    rng = np.random.default_rng(spec.seed)
    n = spec.n_templates
    kind_counts = spec.kind_counts()
    kind = _placed(rng, kind_counts)

    sizes = np.array(spec.size_list, dtype=np.int64)
    weights = spec.size_weight_list
    if weights is None:
        size = sizes[np.arange(n) % sizes.shape[0]]
    else:
        size = sizes[_placed(rng, _apportion_each(n, weights, "size", [str(s) for s in sizes]))]

    url = np.full(n, -1, dtype=np.int64)
    requests = [http_request(u, spec.host) for u in spec.urls]
    http = np.flatnonzero(kind == _HTTP)
    if http.shape[0]:
        url_w = spec.url_weights or (1.0,) * len(spec.urls)
        url[http] = _placed(rng, _apportion_each(http.shape[0], url_w, "URL", spec.urls))
    req_len = np.array([len(r) for r in requests] or [0], dtype=np.int64)
    req_off = np.zeros_like(req_len)
    np.cumsum(req_len[:-1], out=req_off[1:])
    req = np.frombuffer(b"".join(requests), dtype=np.uint8)
    length = size.copy()
    length[http] = np.maximum(size[http], _HDR_TCP + req_len[url[http]])

    # Flows: per kind, a block of the flow table; the kind's templates visit it round-robin.
    flow_counts = _share_flows(spec.flows, kind_counts)
    flow_base = np.concatenate([[0], np.cumsum(flow_counts)[:-1]]).astype(np.int64)
    flow = np.empty(n, dtype=np.int64)
    for k in range(len(KINDS)):
        members = np.flatnonzero(kind == k)
        flow[members] = flow_base[k] + np.arange(members.shape[0]) % max(flow_counts[k], 1)
    src0, n_src = _hosts(spec.src_net)
    dst0, n_dst = _hosts(spec.dst_net)
    keys = _unique_keys(rng, spec.flows, n_src * n_dst * _N_PORTS)
    src_ip = src0 + keys % n_src
    dst_ip = dst0 + (keys // n_src) % n_dst
    sport = _PORT_LO + keys // (n_src * n_dst)
    flow_kind = np.repeat(np.arange(len(KINDS), dtype=np.int64), flow_counts)
    dport = np.where(flow_kind == _HTTP, np.int64(80), rng.integers(_PORT_LO, 65536, size=spec.flows, dtype=np.int64))
    proto = np.where(flow_kind == _UDP, np.int64(17), np.int64(6)).astype(np.int64)

    offsets = np.zeros(n, dtype=np.int64)
    np.cumsum(length[:-1], out=offsets[1:])
    data = rng.integers(0, 256, size=int(length.sum()), dtype=np.uint8)
    macs = np.frombuffer(bytes.fromhex((spec.dst_mac + spec.src_mac).replace(":", "")), dtype=np.uint8).copy()
    seq = rng.integers(0, 1 << 32, size=n, dtype=np.int64)
    lengths = length.astype(np.int32)
    _write_templates(
        data, offsets, lengths, kind, url, flow, seq, macs, src_ip, dst_ip, sport, dport, req, req_off, req_len
    )
    trace = Trace(data, offsets, lengths, lengths.copy(), np.zeros(n, dtype=np.int64))
    comp = Composition(
        kind=kind.astype(np.int8),
        url=url.astype(np.int32),
        size=size.astype(np.int32),
        length=lengths.copy(),
        flow=flow.astype(np.int32),
        urls=spec.urls,
        src_ip=src_ip,
        dst_ip=dst_ip,
        proto=proto,
        sport=sport,
        dport=dport,
    )
    return trace, comp


class TokenBucket:
    """A token bucket of ``burst`` frames refilled at ``rate_pps``, in exact integer arithmetic.

    Tokens are counted in 10^-12 frame units and the rate in milli-frames per second, so ``t`` ns
    add exactly ``t * rate_mpps`` units and no rounding ever accumulates. The bucket is full at
    the first :meth:`allowed` call (when the clock starts); a clock that goes back adds nothing.
    """

    UNIT = 10**12  # token units per frame: ns * milli-frames/s = 10^-12 frames

    def __init__(self, rate_pps: float, burst: int) -> None:
        self._rate = round(rate_pps * 1000)
        if self._rate < 1 or burst < 1:
            raise ValueError(f"need rate_pps >= 0.001 and burst >= 1, got {rate_pps} and {burst}")
        self._cap = burst * self.UNIT
        self._tokens = self._cap
        self._last: int | None = None

    def allowed(self, now_ns: int, sent: int) -> int:
        if self._last is not None and now_ns > self._last:
            self._tokens = min(self._cap, self._tokens + (now_ns - self._last) * self._rate)
        if self._last is None or now_ns > self._last:
            self._last = now_ns
        return self._tokens // self.UNIT

    def took(self, n: int) -> None:
        self._tokens -= n * self.UNIT

    def resume(self, sent: int) -> None:
        """Nothing to carry over: a resumed source starts with a full bucket, like a new one."""


class GeneratorRx(FrameReplay):
    """An :class:`~micronf.io.backend.RxBackend` replaying the templates of a :class:`GeneratorSpec`.

    ``count`` frames in total (endless when None), at most ``rate_pps`` (token bucket of
    ``burst`` frames, see :class:`TokenBucket`; ``clock`` returns ns). Building takes a few
    milliseconds per thousand templates, once.
    """

    def __init__(self, spec: GeneratorSpec, *, clock: Clock = time.monotonic_ns) -> None:
        trace, self.composition = build_templates(spec)
        pacer = None
        if spec.rate_pps is not None:
            burst = spec.burst if spec.burst is not None else max(1, math.ceil(spec.rate_pps / 100))
            pacer = TokenBucket(spec.rate_pps, burst)
        super().__init__(trace, limit=spec.count, pacer=pacer, clock=clock)
        self.spec = spec

    def recv(self, max_frames: int) -> FrameBatch:
        """The next window (see :meth:`FrameReplay.recv`), stamped with the frames' sequence numbers
        when ``spec.sequence`` is set (one compiled pass over the window, in place: the templates are
        handed out, and copied by the Rx service, before the next call stamps them again)."""
        b = super().recv(max_frames)
        if self.spec.sequence and b.n:
            stamp_frames(b.data, b.off, b.length, b.n, self._sent - b.n)
        return b

    def describe(self) -> Composition:
        """The exact composition of the template cycle (frame ``j`` is template ``j % templates``)."""
        return self.composition


# --------------------------------------------------------------------------- the paper's traffic

PAPER_BENIGN_URLS: tuple[str, ...] = (
    "/",
    "/index.html",
    "/products.php?id=42",
    "/search?q=union+station+selection",
    "/search?q=rock+and+roll",
    "/images/logo.png",
    "/login.php?user=o%27reilly",
    "/cart?item=17&qty=2",
)
"""Ordinary request-targets, including look-alikes (``union``, ``and``, an encoded quote) that
``SQLI_SIGNATURES`` must not flag."""

PAPER_SQLI_URLS: tuple[str, ...] = (
    "/products.php?id=1'+OR+1=1--",
    "/search?q=x'+UNION+SELECT+username,password+FROM+users--",
    "/login.php?user=admin'--&pass=x",
    "/item?id=1;DROP+TABLE+orders",
)
"""SQL-injection request-targets (URL-encoded), each matched by ``SQLI_SIGNATURES`` once decoded."""


def paper_traffic(
    *, count: int | None = None, rate_pps: float | None = None, flows: int = 100, size: int = 200, seed: int = 0,
    sequence: bool = False,
) -> GeneratorSpec:
    """The paper's benchmark traffic: ``size``-byte HTTP GETs, 20% with SQL-injection URLs.

    Over each cycle of 1000 templates exactly 800 carry a benign URL (100 per URL) and 200 an
    SQL-injection URL (50 per URL), in random order. ``sequence``: stamp every frame (see
    :mod:`micronf.io.sequence`).
    """
    urls = PAPER_BENIGN_URLS + PAPER_SQLI_URLS
    sqli_weight = 0.25 * len(PAPER_BENIGN_URLS) / len(PAPER_SQLI_URLS)  # 20 : 80 overall
    return GeneratorSpec(
        sizes=(size,),
        flows=flows,
        protocols={"tcp": 1.0},
        http_fraction=1.0,
        urls=urls,
        url_weights=(1.0,) * len(PAPER_BENIGN_URLS) + (sqli_weight,) * len(PAPER_SQLI_URLS),
        count=count,
        rate_pps=rate_pps,
        seed=seed,
        sequence=sequence,
    )
