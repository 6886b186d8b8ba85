"""Flow sharding of the in-memory inputs (pcap replay, generator): shard i of n replays exactly the
frames whose flow hashes to i (computed here independently: textbook murmur3, the published jump
hash), in their order; budgets, rates, original timing and restart resume are split per shard so
the shards together are the unsharded input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from micronf.io.backend import RxBackend
from micronf.io.generator import GeneratorRx
from micronf.io.generator_spec import GeneratorSpec
from micronf.io.replay import PcapRx, PcapRxSpec, TimestampPacer
from micronf.io.shard import Shard, flow_hashes, selected_frames, shard_mask
from micronf.io.specs import open_rx
from micronf.io.trace import Trace
from tests.shards import flow_key, multi_flow_frames, ref_frame_hash, ref_shard


def frames_of(rx: RxBackend, max_frames: int = 7, limit: int = 1 << 20) -> list[bytes]:
    """Every frame ``rx`` hands out until it is exhausted (small windows: many calls)."""
    out: list[bytes] = []
    while not rx.exhausted and len(out) < limit:
        b = rx.recv(max_frames)
        out += [b.data[int(b.off[i]) : int(b.off[i]) + int(b.length[i])].tobytes() for i in range(b.n)]
    return out


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return multi_flow_frames()


@pytest.fixture()
def pcap(tmp_path: Path, frames: list[bytes]) -> Path:
    path = tmp_path / "flows.pcap"
    pkts = [Ether(f) for f in frames]
    for i, p in enumerate(pkts):
        p.time = 1000 + i / 100  # 10 ms apart
    wrpcap(str(path), pkts)
    return path


@pytest.mark.parametrize("n", [2, 3, 5])
def test_pcap_shards_replay_exactly_their_flows_in_order(pcap: Path, frames: list[bytes], n: int) -> None:
    spec = PcapRxSpec(path=pcap, loop=2)
    seen: dict[tuple[str, str, int, int, int] | None, int] = {}
    total = 0
    for i in range(n):
        got = frames_of(PcapRx(spec, shard=Shard(i, n)))
        expect = [f for f in frames if ref_shard(f, n) == i]
        assert got == expect * 2  # the shard's frames, in trace order, looped
        for f in got:
            assert seen.setdefault(flow_key(f), i) == i  # a flow is on one shard only
        total += len(got)
    assert total == 2 * len(frames)
    assert len({s for s in seen.values()}) == n  # 48 flows spread over every shard


def test_fragments_and_non_ip_follow_their_flow(frames: list[bytes]) -> None:
    trace = Trace.from_frames(frames)
    for n in (2, 4):
        mask = shard_mask(flow_hashes(trace), Shard(1, n))
        assert [bool(m) for m in mask] == [ref_shard(f, n) == 1 for f in frames]
    pieces = [ref_shard(f, 4) for f in frames[-4:-1]]  # the fragments of one datagram: one shard
    assert len(set(pieces)) == 1


def test_generator_count_is_split_so_the_shards_send_it_exactly() -> None:
    spec = GeneratorSpec(count=1234, flows=40, templates=100, sizes=(64,), protocols={"udp": 0.5, "tcp": 0.5})
    whole = frames_of(GeneratorRx(spec), max_frames=64)
    assert len(whole) == 1234
    n = 3
    parts = [frames_of(GeneratorRx(spec, shard=Shard(i, n)), max_frames=64) for i in range(n)]
    assert sum(map(len, parts)) == 1234
    for i, part in enumerate(parts):
        assert part == [f for f in whole if ref_shard(f, n) == i]  # the whole sequence's frames, in order


def test_generator_rate_is_split_by_the_shards_share() -> None:
    now = [0]
    spec = GeneratorSpec(rate_pps=10_000, flows=40, templates=200, sizes=(64,), burst=10)
    gens = [GeneratorRx(spec, clock=lambda: now[0], shard=Shard(i, 2)) for i in range(2)]
    shares = [len(g.trace) / 200 for g in gens]  # the shard's templates
    assert sum(shares) == 1
    sent = [0, 0]
    for _ in range(1000):  # 1 s in 1 ms steps
        now[0] += 1_000_000
        for i, g in enumerate(gens):
            sent[i] += g.recv(1000).n
    for i in range(2):
        assert abs(sent[i] - 10_000 * shares[i]) <= 10 + 1  # the bucket's burst, rounding
    assert abs(sum(sent) - 10_000) <= 22


def test_resume_continues_the_shard_where_it_stopped(pcap: Path, frames: list[bytes]) -> None:
    spec = PcapRxSpec(path=pcap, loop=3)
    shard = Shard(1, 3)
    full = frames_of(PcapRx(spec, shard=shard))
    for k in (0, 5, len(full) // 2, len(full)):
        again = PcapRx(spec, shard=shard)
        again.resume(k)
        assert frames_of(again) == full[k:]
        assert again.stats()["frames"] == len(full)


def test_original_timing_keeps_each_frames_time_in_the_whole_trace(pcap: Path, frames: list[bytes]) -> None:
    now = [0]
    spec = PcapRxSpec(path=pcap, timing="original", loop=2)
    n, i = 2, 1
    rx = PcapRx(spec, shard=Shard(i, n), clock=lambda: now[0])
    times = [k * 10_000_000 for k, f in enumerate(frames) if ref_shard(f, n) == i]  # ns after the first frame
    period = (len(frames) - 1) * 10_000_000
    due = times + [period + t for t in times]
    got = 0
    for t in range(0, 2 * period + 1, 3_000_000):
        now[0] = t
        got += rx.recv(1000).n
        assert got == sum(1 for d in due if d <= t + 1_000)  # 1 µs slack for the float timestamps


def test_pacer_with_an_empty_selection_paces_nothing() -> None:
    pacer = TimestampPacer(np.array([0, 5, 9], np.int64), select=np.zeros(3, np.bool_))
    pacer.resume(0)
    assert pacer.allowed(10, 0) == 0


def test_selected_frames_counts_over_whole_loops() -> None:
    mask = np.array([True, False, True, True, False])
    assert [selected_frames(mask, k) for k in (0, 1, 2, 5, 6, 12)] == [0, 1, 1, 3, 4, 7]
    assert selected_frames(np.zeros(0, np.bool_), 9) == 0


def test_open_rx_and_shard_bounds(pcap: Path, frames: list[bytes]) -> None:
    rx = open_rx({"kind": "pcap", "path": str(pcap)}, Shard(0, 2))
    assert frames_of(rx) == [f for f in frames if ref_shard(f, 2) == 0]
    with pytest.raises(ValueError, match="shard 2 of 2"):
        Shard(2, 2)
    with pytest.raises(ValueError, match="fanout group"):
        Shard(0, 2, 70_000)
    with pytest.raises(ValueError, match="needs a fanout group"):  # before any socket is opened
        open_rx({"kind": "afpacket", "iface": "lo"}, Shard(0, 2))


def test_replayed_batches_carry_each_frames_flow_hash(pcap: Path, frames: list[bytes]) -> None:
    for shard in (Shard(), Shard(1, 3)):
        rx = PcapRx(PcapRxSpec(path=pcap, loop=2), shard=shard)
        while not rx.exhausted:
            b = rx.recv(5)
            assert b.hashes.shape[0] == b.n
            for i in range(b.n):
                frame = b.data[int(b.off[i]) : int(b.off[i]) + int(b.length[i])].tobytes()
                assert int(b.hashes[i]) == ref_frame_hash(frame)  # what the Rx service would compute
