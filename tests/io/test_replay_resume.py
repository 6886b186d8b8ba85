"""A replayed source resumed at a position (what a restarted Rx service does, issue 11 §1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from micronf.io.generator import GeneratorRx
from micronf.io.generator_spec import GeneratorSpec
from micronf.io.replay import PcapRx, PcapRxSpec
from tests.io.test_replay import FakeClock, make_frames, write_capture


def test_resumed_pcap_continues_at_its_record_and_loop(tmp_path: Path) -> None:
    frames = make_frames(5)
    path = write_capture(tmp_path / "t.pcap", frames)
    rx = PcapRx(PcapRxSpec(path=path, loop=2))
    rx.resume(7)  # loop 2, record 2
    b = rx.recv(10)
    got = [bytes(b.data[b.off[i] : b.off[i] + b.length[i]]) for i in range(b.n)]
    assert got == frames[2:]  # a window stops at the end of the trace
    assert rx.exhausted and rx.stats() == {"frames": 10, "bytes": 2 * sum(map(len, frames)), "loops": 2}
    with pytest.raises(ValueError, match="sent must be >= 0"):
        rx.resume(-1)


def test_resumed_paced_pcap_honours_the_gaps_after_its_record(tmp_path: Path) -> None:
    path = write_capture(tmp_path / "t.pcap", make_frames(4), gaps_us=[1000, 0, 4000])  # at 0, 1, 1, 5 ms
    clock = FakeClock()
    rx = PcapRx(PcapRxSpec(path=path, timing="original"), clock=clock)
    rx.resume(3)  # frame 3 is due at once (not 5 ms late, nor 5 ms early with frames 0-2 again)
    assert rx.recv(10).n == 1 and rx.exhausted
    rx = PcapRx(PcapRxSpec(path=path, loop=2, timing="original"), clock=clock)
    rx.resume(1)  # frames 1 and 2 share a timestamp: both due; frame 3 4 ms later
    assert rx.recv(10).n == 2
    clock.now += 3_999_999
    assert rx.recv(10).n == 0
    clock.now += 1
    assert rx.recv(10).n == 1


def test_resumed_generator_is_bounded_by_its_count() -> None:
    gen = GeneratorRx(GeneratorSpec(count=1000, templates=100))
    gen.resume(950)
    assert gen.recv(256).n == 50 and gen.exhausted
    gen = GeneratorRx(GeneratorSpec(count=1000, templates=100))
    gen.resume(5000)  # beyond the count: nothing left
    assert gen.recv(256).n == 0 and gen.exhausted and gen.stats()["frames"] == 1000
