"""What synthetic traffic to generate: :class:`GeneratorSpec`, its exact apportionment, the paper's mix.

The spec is validated and apportioned here (control plane, no numba); :mod:`micronf.io.generator`
builds the template frames it describes and replays them as Rx batches.

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
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "IMIX",
    "KINDS",
    "MAX_TEMPLATES",
    "PAPER_BENIGN_URLS",
    "PAPER_SQLI_URLS",
    "GeneratorSpec",
    "http_request",
    "paper_traffic",
]

KINDS: tuple[str, ...] = ("http", "tcp", "udp")
"""Packet kinds, in the order of :attr:`Composition.kind` codes (0, 1, 2)."""
KIND_HTTP, KIND_TCP, KIND_UDP = 0, 1, 2

IMIX: tuple[tuple[int, int], ...] = ((60, 7), (590, 4), (1514, 1))
"""The simple IMIX (7:4:1 of 64, 594 and 1518 bytes on the wire) as (size without FCS, weight)."""

MIN_FRAME, MAX_FRAME = 60, 1514  # Ethernet without FCS
MAX_TEMPLATES = 1 << 20
MAX_TEMPLATE_BYTES = 256 << 20
HDR_TCP = 14 + 20 + 20  # Ethernet + IPv4 + TCP (no options)
HDR_UDP = 14 + 20 + 8
PORT_LO = 1024
N_PORTS = 65536 - PORT_LO
_MAC_PATTERN = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
_DENOMINATOR = 10**6  # weights are read as fractions with this resolution (0.2 is exactly 1/5)
L4 = Literal["tcp", "udp"]


def _tcp_only() -> dict[L4, float]:
    return {"tcp": 1.0}


def http_request(url: str, host: str) -> bytes:
    """The payload of an HTTP template: ``GET <url> HTTP/1.1\\r\\nHost: <host>\\r\\n\\r\\n``."""
    return f"GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("ascii")


def host_range(net: ipaddress.IPv4Network) -> tuple[int, int]:
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


def apportion_each(total: int, weights: Sequence[float | Fraction], what: str, names: Sequence[str]) -> list[int]:
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


def share_flows(flows: int, counts: Sequence[int]) -> list[int]:
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
        if HDR_TCP + longest > MAX_FRAME:
            raise ValueError(f"an HTTP request of {longest} bytes does not fit in a {MAX_FRAME}-byte frame")
        n = self.n_templates
        if self.flows > n:
            raise ValueError(f"flows={self.flows} exceeds templates={n}: every flow needs at least one template")
        flow_space = host_range(self.src_net)[1] * host_range(self.dst_net)[1] * N_PORTS
        if self.flows > flow_space:
            raise ValueError(f"flows={self.flows} exceeds the {flow_space} (src, dst, sport) combinations of the nets")
        if n > MAX_TEMPLATES:
            raise ValueError(f"flows={self.flows} needs {n} templates, more than {MAX_TEMPLATES}")
        biggest = max(HDR_TCP + longest, *self.size_list)
        if n * biggest > MAX_TEMPLATE_BYTES:
            raise ValueError(f"templates={n} of up to {biggest} bytes exceed {MAX_TEMPLATE_BYTES >> 20} MiB")
        share_flows(self.flows, self.kind_counts())  # raises when infeasible
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
        return apportion_each(self.n_templates, [http, tcp_share - http, 1 - tcp_share], "packet kind", KINDS)


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
