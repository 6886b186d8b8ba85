"""Pcap replay (loops, original timing with a fake clock, errors) and the pcap / null Tx sinks."""

from __future__ import annotations

import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scapy.all import IP, UDP, Ether, Raw, wrpcap

from micronf.dataplane.pool import PacketPool
from micronf.io.backend import RxBackend, TxBackend
from micronf.io.pcap_read import read_pcap
from micronf.io.replay import NullTx, NullTxSpec, PcapRx, PcapRxSpec, PcapTx, PcapTxSpec
from micronf.io.trace import Q_TIMESTAMP_NS, PcapError

T0 = 1_600_000_000  # seconds: any date inside the classic pcap range


class FakeClock:
    """A clock the test moves by hand (ns)."""

    def __init__(self) -> None:
        self.now = 5_000_000_000

    def __call__(self) -> int:
        return self.now


def make_frames(k: int) -> list[bytes]:
    eth = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")  # explicit: no ARP lookup by scapy
    return [bytes(eth / IP(dst="192.0.2.7") / UDP(sport=4000 + i, dport=53) / Raw(b"p" * i)) for i in range(k)]


def write_capture(path: Path, frames: list[bytes], gaps_us: list[int] | None = None) -> Path:
    """A µs pcap of ``frames``; frame i is stamped T0 + sum(gaps_us[:i]) µs."""
    pkts = [Ether(f) for f in frames]
    t = Decimal(T0)
    for i, p in enumerate(pkts):
        if gaps_us and i:
            t += Decimal(gaps_us[i - 1]) / 1_000_000
        p.time = t
    wrpcap(str(path), pkts)
    return path


def drain(rx: PcapRx, max_frames: int, calls: int = 1000) -> list[bytes]:
    out = []
    for _ in range(calls):
        if rx.exhausted:
            break
        b = rx.recv(max_frames)
        out += [b.data[b.off[i] : b.off[i] + b.length[i]].tobytes() for i in range(b.n)]
    return out


@pytest.fixture
def capture(tmp_path: Path) -> tuple[Path, list[bytes]]:
    frames = make_frames(5)
    return write_capture(tmp_path / "in.pcap", frames), frames


# --------------------------------------------------------------------------- replay


@pytest.mark.parametrize("loops", [1, 3])
def test_loop_n_replays_the_trace_n_times(capture: tuple[Path, list[bytes]], loops: int) -> None:
    path, frames = capture
    rx = PcapRx(PcapRxSpec(path=path, loop=loops))
    assert isinstance(rx, RxBackend)
    assert drain(rx, 2) == frames * loops
    assert rx.exhausted and rx.recv(2).n == 0
    assert rx.stats() == {"frames": 5 * loops, "bytes": sum(map(len, frames)) * loops, "loops": loops}


def test_windows_stop_at_the_end_of_the_trace(capture: tuple[Path, list[bytes]]) -> None:
    path, _ = capture
    rx = PcapRx(PcapRxSpec(path=path, loop=2))
    batches = [rx.recv(3) for _ in range(5)]
    assert [b.n for b in batches] == [3, 2, 3, 2, 0]
    assert all(np.shares_memory(b.off, rx.trace.offsets) and b.data is rx.trace.data for b in batches[:4])


def test_loop_zero_is_forever(capture: tuple[Path, list[bytes]]) -> None:
    path, frames = capture
    rx = PcapRx(PcapRxSpec(path=path, loop=0))
    got = drain(rx, 4, calls=100)  # 100 calls: 4,1 per pass -> 50 passes
    assert got == frames * 50
    assert not rx.exhausted and rx.stats()["loops"] == 50


def test_original_timing_follows_the_gaps_with_a_fake_clock(tmp_path: Path) -> None:
    frames = make_frames(4)
    path = write_capture(tmp_path / "t.pcap", frames, gaps_us=[1000, 0, 4000])  # at 0, 1, 1, 5 ms
    clock = FakeClock()
    rx = PcapRx(PcapRxSpec(path=path, loop=2, timing="original"), clock=clock)
    assert rx.recv(10).n == 1  # the clock starts now: frame 0 is due
    assert rx.recv(10).n == 0
    clock.now += 999_999
    assert rx.recv(10).n == 0
    clock.now += 1  # 1 ms: frames 1 and 2 share a timestamp
    assert rx.recv(10).n == 2
    clock.now += 4_000_000  # 5 ms: frame 3, and loop 2 starts right after (frame 0 is also due)
    assert rx.recv(10).n == 1  # a window stops at the end of the trace
    assert rx.recv(10).n == 1
    clock.now += 60_000_000  # everything is due long ago: the rest at once, up to the loop count
    assert rx.recv(10).n == 3
    assert rx.exhausted


def test_original_timing_speed_multiplier(tmp_path: Path) -> None:
    path = write_capture(tmp_path / "t.pcap", make_frames(3), gaps_us=[2000, 2000])  # 0, 2, 4 ms
    clock = FakeClock()
    rx = PcapRx(PcapRxSpec(path=path, timing="original", speed=4.0), clock=clock)
    assert rx.recv(10).n == 1
    clock.now += 499_999
    assert rx.recv(10).n == 0
    clock.now += 1  # 0.5 ms x 4 = 2 ms of trace time
    assert rx.recv(10).n == 1
    clock.now += 500_000
    assert rx.recv(10).n == 1
    assert rx.exhausted


def test_original_timing_without_gaps_is_immediate(capture: tuple[Path, list[bytes]]) -> None:
    path, frames = capture  # every frame has the same timestamp
    rx = PcapRx(PcapRxSpec(path=path, loop=3, timing="original"), clock=FakeClock())
    assert drain(rx, 100, calls=3) == frames * 3


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pcap: no such capture file"):
        PcapRx(PcapRxSpec(path=tmp_path / "nope.pcap"))
    (tmp_path / "text.pcap").write_text("hello, world")
    with pytest.raises(PcapError, match=r"text\.pcap: not a pcap or pcapng file"):
        PcapRx(PcapRxSpec(path=tmp_path / "text.pcap"))
    wifi = tmp_path / "wifi.pcap"
    wrpcap(str(wifi), [Raw(b"x" * 40)], linktype=105)
    with pytest.raises(PcapError, match=r"wifi\.pcap: link type 105 \(IEEE 802\.11\) is not supported"):
        PcapRx(PcapRxSpec(path=wifi))


def test_raw_ip_capture_is_replayed_as_ethernet(tmp_path: Path) -> None:
    """The agent's pcap Rx takes what the offline runners take: a raw IP capture (link type 101)
    comes out as Ethernet frames carrying the same IP packets."""
    pkts = [IP(dst="192.0.2.1") / UDP(dport=53 + i) / Raw(b"q" * i) for i in range(4)]
    raw_ip = tmp_path / "rawip.pcap"
    wrpcap(str(raw_ip), pkts, linktype=101)
    rx = PcapRx(PcapRxSpec(path=raw_ip))
    b = rx.recv(8)
    got = [Ether(b.data[o : o + n].tobytes()) for o, n in zip(b.off[: b.n], b.length[: b.n], strict=True)]
    assert [bytes(g[IP]) for g in got] == [bytes(p) for p in pkts]
    assert all(g.type == 0x0800 for g in got)


def test_empty_capture_is_exhausted_at_once(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    wrpcap(str(path), [])
    for loop in (0, 1):
        rx = PcapRx(PcapRxSpec(path=path, loop=loop))
        assert rx.exhausted and rx.recv(8).n == 0


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"path": "x.pcap", "loop": -1}, "loop"),
        ({"path": "x.pcap", "speed": 2.0}, "speed only applies to timing='original'"),
        ({"path": "x.pcap", "timing": "original", "speed": 0}, "speed"),
        ({"path": "x.pcap", "timing": "slow"}, "timing"),
        ({"path": "x.pcap", "rate": 1}, "Extra inputs are not permitted"),
        ({"loop": 1}, "path"),
    ],
)
def test_bad_rx_specs(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        PcapRxSpec.model_validate(fields)


# --------------------------------------------------------------------------- sinks


def pool_with(frames: list[bytes], ts_ns: list[int]) -> tuple[PacketPool, np.ndarray]:
    pool = PacketPool.local(64)
    handles = pool.alloc(len(frames))
    for h, f, t in zip(handles, frames, ts_ns, strict=True):
        pool.write_frame(int(h), f)
        pool.arrays.qwords[h, Q_TIMESTAMP_NS] = t
    return pool, handles


def test_pcap_tx_writes_what_read_pcap_reads_back(tmp_path: Path) -> None:
    frames = make_frames(9)
    ts = [T0 * 10**9 + 1000 * i + 7 for i in range(9)]
    pool, handles = pool_with(frames, ts)
    out = tmp_path / "new" / "dir" / "out.pcap"
    tx = PcapTx(PcapTxSpec(path=out))
    assert isinstance(tx, TxBackend)
    assert tx.send(pool.arrays, handles, 4) == 4
    assert tx.send(pool.arrays, handles[4:], 5) == 5
    assert tx.send(pool.arrays, handles, 0) == 0
    tx.flush()
    assert [read_pcap(out).frame(i) for i in range(9)] == frames  # flushed: readable before close
    tx.close()
    tx.close()
    trace = read_pcap(out)
    assert [trace.frame(i) for i in range(len(trace))] == frames
    assert trace.ts_ns.tolist() == ts
    assert tx.stats() == {"frames": 9, "bytes": sum(map(len, frames))}
    assert pool.stats().in_use == 9  # the sink never frees


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
def test_tcpdump_reads_pcap_tx_output_byte_for_byte(tmp_path: Path) -> None:
    frames = make_frames(6)
    pool, handles = pool_with(frames, [T0 * 10**9 + i for i in range(6)])
    tx = PcapTx(PcapTxSpec(path=tmp_path / "o.pcap"))
    tx.send(pool.arrays, handles, 6)
    tx.close()
    res = subprocess.run(
        ["tcpdump", "-r", str(tmp_path / "o.pcap"), "-nn", "-xx"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    dumped: list[bytes] = []
    for line in res.stdout.splitlines():
        m = re.match(r"\s+0x[0-9a-f]{4}:\s+((?:[0-9a-f]{2,4}\s?)+)", line)
        if m is None:
            dumped.append(b"")  # a packet summary line starts the next frame
        else:
            dumped[-1] += bytes.fromhex(m.group(1).replace(" ", ""))
    assert dumped == frames


def test_null_tx_takes_and_counts_everything() -> None:
    frames = make_frames(7)
    pool, handles = pool_with(frames, [0] * 7)
    tx = NullTx(NullTxSpec())
    assert isinstance(tx, TxBackend)
    assert tx.send(pool.arrays, handles, 7) == 7
    assert tx.send(pool.arrays, handles, 3) == 3
    tx.flush()
    tx.close()
    assert tx.stats() == {"frames": 10, "bytes": sum(map(len, frames)) + sum(map(len, frames[:3]))}


def test_tx_specs() -> None:
    assert PcapTxSpec.model_validate({"kind": "pcap", "path": "/tmp/x.pcap"}).path == Path("/tmp/x.pcap")
    assert NullTxSpec.model_validate({"kind": "null"}).kind == "null"
    with pytest.raises(ValidationError, match="Extra inputs"):
        NullTxSpec.model_validate({"kind": "null", "path": "x"})
    with pytest.raises(ValidationError, match="kind"):
        PcapTxSpec.model_validate({"kind": "null", "path": "x"})
