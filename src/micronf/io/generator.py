"""Synthetic traffic: a finite set of template frames, built once, replayed as Rx batches.

Why templates: the Rx service asks for up to tens of millions of frames per second, so nothing
may be built per frame. :func:`build_templates` builds every distinct frame once (headers, IPv4
and TCP/UDP checksums, HTTP request payloads) with numpy and one numba kernel, into one
contiguous :class:`~micronf.io.trace.Trace`; :class:`GeneratorRx` then hands out windows of it
like a pcap replay (:class:`~micronf.io.replay.FrameReplay`: views, no copy), limited by
``count`` and paced by a token bucket when ``rate_pps`` is set. The templates are a trace, so
``PcapWriter.write_trace`` dumps them for Wireshark.

What the templates are (kinds, sizes, URLs, flows, exact shares per cycle) is the spec's business:
see :mod:`micronf.io.generator_spec`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.io.backend import I32, I64, U8, FrameBatch
from micronf.io.generator_spec import (
    HDR_TCP,
    KIND_HTTP,
    KIND_UDP,
    KINDS,
    N_PORTS,
    PORT_LO,
    GeneratorSpec,
    apportion_each,
    host_range,
    http_request,
    share_flows,
)
from micronf.io.replay import Clock, FrameReplay
from micronf.io.sequence import stamp_frames
from micronf.io.shard import WHOLE, Shard, flow_hashes, selected_frames, shard_mask
from micronf.io.trace import Trace
from micronf.packet.checksum import csum_finish, ipv4_checksum, sum16

__all__ = ["Composition", "GeneratorRx", "TokenBucket", "build_templates"]


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
        return selected_frames(mask, frames)

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
        proto = 17 if k == KIND_UDP else 6
        _put(data, ip, 0x45000000 | (ln - 14), 4)  # version 4, IHL 5, TOS 0, total length
        _put(data, ip + 4, ((i & 0xFFFF) << 16) | 0x4000, 4)  # identification, DF
        _put(data, ip + 8, (64 << 24) | (proto << 16), 4)  # TTL 64, protocol, checksum 0
        _put(data, ip + 12, src_ip[f], 4)
        _put(data, ip + 16, dst_ip[f], 4)
        _put(data, ip + 10, ipv4_checksum(data, ip, 20), 2)
        l4 = ip + 20
        l4_len = ln - 34
        _put(data, l4, (sport[f] << 16) | dport[f], 4)
        if k == KIND_UDP:
            _put(data, l4 + 4, l4_len << 16, 4)  # length, checksum 0
            csum_at = l4 + 6
        else:
            _put(data, l4 + 4, seq[i], 4)
            _put(data, l4 + 8, seq[i] ^ 0x5A5A5A5A, 4)  # ack: any value, derived to stay reproducible
            _put(data, l4 + 12, (5 << 28) | (0x18 << 16) | 64240, 4)  # data offset 5, PSH|ACK, window
            _put(data, l4 + 16, 0, 4)  # checksum 0, urgent pointer 0
            csum_at = l4 + 16
            if k == KIND_HTTP:
                pay = l4 + 20
                u = url[i]
                n = req_len[u]
                data[pay : pay + n] = req[req_off[u] : req_off[u] + n]
                data[pay + n : o + ln] = 0
        pseudo = (src_ip[f] >> 16) + (src_ip[f] & 0xFFFF) + (dst_ip[f] >> 16) + (dst_ip[f] & 0xFFFF) + proto + l4_len
        c = csum_finish(sum16(data, l4, l4_len, -1) + pseudo)
        if k == KIND_UDP and c == 0:
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
        size = sizes[_placed(rng, apportion_each(n, weights, "size", [str(s) for s in sizes]))]

    url = np.full(n, -1, dtype=np.int64)
    requests = [http_request(u, spec.host) for u in spec.urls]
    http = np.flatnonzero(kind == KIND_HTTP)
    if http.shape[0]:
        url_w = spec.url_weights or (1.0,) * len(spec.urls)
        url[http] = _placed(rng, apportion_each(http.shape[0], url_w, "URL", spec.urls))
    req_len = np.array([len(r) for r in requests] or [0], dtype=np.int64)
    req_off = np.zeros_like(req_len)
    np.cumsum(req_len[:-1], out=req_off[1:])
    req = np.frombuffer(b"".join(requests), dtype=np.uint8)
    length = size.copy()
    length[http] = np.maximum(size[http], HDR_TCP + req_len[url[http]])

    # Flows: per kind, a block of the flow table; the kind's templates visit it round-robin.
    flow_counts = share_flows(spec.flows, kind_counts)
    flow_base = np.concatenate([[0], np.cumsum(flow_counts)[:-1]]).astype(np.int64)
    flow = np.empty(n, dtype=np.int64)
    for k in range(len(KINDS)):
        members = np.flatnonzero(kind == k)
        flow[members] = flow_base[k] + np.arange(members.shape[0]) % max(flow_counts[k], 1)
    src0, n_src = host_range(spec.src_net)
    dst0, n_dst = host_range(spec.dst_net)
    keys = _unique_keys(rng, spec.flows, n_src * n_dst * N_PORTS)
    src_ip = src0 + keys % n_src
    dst_ip = dst0 + (keys // n_src) % n_dst
    sport = PORT_LO + keys // (n_src * n_dst)
    flow_kind = np.repeat(np.arange(len(KINDS), dtype=np.int64), flow_counts)
    random_ports = rng.integers(PORT_LO, 65536, size=spec.flows, dtype=np.int64)
    dport = np.where(flow_kind == KIND_HTTP, np.int64(80), random_ports)
    proto = np.where(flow_kind == KIND_UDP, np.int64(17), np.int64(6)).astype(np.int64)

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

    With a ``shard`` (one of several replicas, see :mod:`micronf.io.shard`) it replays only the
    templates of the shard's flows, in cycle order: of the first ``count`` frames of the whole
    sequence, exactly those of its flows, at the shard's share of ``rate_pps``. Sequence numbers
    (``spec.sequence``) then count the shard's own frames.
    """

    def __init__(self, spec: GeneratorSpec, *, clock: Clock = time.monotonic_ns, shard: Shard = WHOLE) -> None:
        trace, self.composition = build_templates(spec)
        hashes = flow_hashes(trace)
        mask = shard_mask(hashes, shard)
        share = float(np.count_nonzero(mask)) / max(len(trace), 1)
        pacer = None
        if spec.rate_pps is not None and share > 0:
            rate = spec.rate_pps * share
            burst = spec.burst if spec.burst is not None else max(1, math.ceil(rate / 100))
            pacer = TokenBucket(rate, burst)
        limit = None if spec.count is None else selected_frames(mask, spec.count)
        super().__init__(trace.select(mask), limit=limit, pacer=pacer, clock=clock, hashes=hashes[mask])
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
