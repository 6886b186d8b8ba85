"""A real multi-process chain on pcap input: CheckIPHeader -> IPTtlDecrementer -> MacSwapper.

The expected output of every exit is computed with scapy from the input, independently of the
µNFs: bad checksums leave at CheckIPHeader, TTL <= 1 at IPTtlDecrementer.expired, the rest come
out with TTL - 1, a recomputed checksum and swapped MACs. Also run fused in one process
(run-to-completion) with pipelined prefetch (kernels called on sub-batches of 8): same bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

from micronf.app.offline import OVERSIZE_EXIT, frame_capacity_for, offline_capacity_note, run_offline
from micronf.io.pcap_read import read_pcap
from micronf.io.trace import Trace
from micronf.runtime.graph import chain_spec, plan

CHAIN = [("CheckIPHeader", {}), ("IPTtlDecrementer", {}), ("MacSwapper", {})]


def _traffic(n: int) -> list[Ether]:
    pkts = []
    for i in range(n):
        l4 = TCP(sport=1024 + i, dport=80) if i % 2 else UDP(sport=1024 + i, dport=53)
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
            src=f"10.0.{i % 7}.1", dst="192.168.1.1", ttl=i % 9) / l4 / Raw(bytes(i % 50))
        p = Ether(bytes(p))
        if i % 17 == 3:
            p[IP].chksum ^= 0x0101  # corrupt
        pkts.append(p)
    return pkts


def _expected(pkts: list[Ether]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {"out": [], "CheckIPHeader.bad_checksum": [], "IPTtlDecrementer.expired": []}
    for p in pkts:
        good = IP(bytes(p[IP]))
        del good.chksum
        if IP(bytes(good)).chksum != p[IP].chksum:
            out["CheckIPHeader.bad_checksum"].append(bytes(p))
        elif p[IP].ttl <= 1:
            out["IPTtlDecrementer.expired"].append(bytes(p))
        else:
            q = p.copy()
            q[IP].ttl -= 1
            del q[IP].chksum
            q = Ether(dst=p.src, src=p.dst) / IP(bytes(q[IP]))
            out["out"].append(bytes(q))
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("fused", [False, True], ids=["process-per-unf", "fused-run-to-completion"])
def test_chain_over_pcap_byte_for_byte(tmp_path: Path, fused: bool) -> None:
    pkts = _traffic(4000)
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    spec = chain_spec(CHAIN, cluster="all" if fused else None, prefetch=8 if fused else 0)
    layout = plan(spec, capture_drops=True, on_full="wait")
    assert len(layout.processes) == (1 if fused else 3)
    res = run_offline(layout, read_pcap(tmp_path / "in.pcap"), tmp_path / "out", loops=1)
    expected = _expected(pkts)
    assert sum(len(v) for v in expected.values()) == len(pkts)
    for name, frames in expected.items():
        got = [bytes(p) for p in rdpcap(str(tmp_path / "out" / f"{name}.pcap"))]  # an independent reader
        assert got == frames, name
        assert res.per_exit[name] == len(frames)
    assert sum(res.per_exit.values()) == len(pkts)  # every other exit is empty
    assert res.fed == len(pkts) and res.freed_inside == 0 and res.balanced


# --------------------------------------------------------------------------- frame sizes (issue 10 §2)


def _sized(n: int, seq: int) -> Ether:
    """An ``n``-byte Ethernet/IPv4/TCP frame (scapy fills lengths and checksums)."""
    head = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
        src="10.0.0.1", dst="10.0.0.2", ttl=2 + seq % 60) / TCP(sport=1000 + seq, dport=80)
    return Ether(bytes(head / Raw(bytes([seq % 256]) * (n - len(head)))))


SIZES = [60, 64, 1514, 1518, 1522, 1523, 1920, 1921, 2048, 4096, 8192, 9000]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chain_command_takes_jumbo_frames_whole(tmp_path: Path) -> None:
    """Frames of 60..9000 bytes go through `micronf chain` byte for byte (before: cut to 1920 bytes
    and dropped as len_exceeds_frame); the run says which frame capacity it picked."""
    from typer.testing import CliRunner

    from micronf.app.cli import app

    pkts = [_sized(n, i) for i, n in enumerate(SIZES * 3)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    res = CliRunner().invoke(app, ["chain", "CheckIPHeader -> IPTtlDecrementer -> MacSwapper",
                                   "--pcap", str(tmp_path / "in.pcap"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "frame capacity 9000 bytes (the longest frame of the capture): every frame fits" in res.output
    assert f"{len(pkts)} in, {len(pkts)} written, 0 freed inside: conservation ok" in res.output
    expected = _expected(pkts)
    assert expected["out"] and len(expected["out"]) == len(pkts)  # every frame valid, none expires
    got = [bytes(p) for p in rdpcap(str(tmp_path / "out" / "out.pcap"))]
    assert got == expected["out"]
    assert [len(p) for p in got] == SIZES * 3
    assert len(rdpcap(str(tmp_path / "out" / "rx.oversize.pcap"))) == 0


@pytest.mark.timeout(600)
def test_offline_runner_takes_64k_frames_and_drops_longer_ones_whole(tmp_path: Path) -> None:
    """Capacity follows the capture up to 65535 bytes; a longer frame is not cut but written, whole,
    to the rx.oversize exit, and the run stays conserved."""
    small = [bytes(_sized(n, i)) for i, n in enumerate([60, 1522, 65535])]
    huge = bytes(Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:08", type=0x88B5) / Raw(b"z" * (70000 - 14)))
    frames = [small[0], huge, small[1], small[2], huge]
    trace = Trace.from_frames(frames, ts_ns=[10**18 + i for i in range(5)])
    assert frame_capacity_for(trace) == 65535
    assert frame_capacity_for(Trace.from_frames(small[:2])) == 1522
    assert frame_capacity_for(Trace.from_frames([small[0]] * 3 + [bytes(_sized(9000, 1))])) == 9000
    layout = plan(chain_spec([("MacSwapper", {})], cluster="all"), capture_drops=True, on_full="wait")
    res = run_offline(layout, trace, tmp_path / "out", loops=2)
    assert res.frame_capacity == 65535 and res.balanced
    assert res.fed == 10 and res.per_exit["out"] == 6 and res.per_exit[OVERSIZE_EXIT] == 4
    out = read_pcap(tmp_path / "out" / "out.pcap")
    assert [out.frame(i) for i in range(len(out))] == [f[6:12] + f[:6] + f[12:] for f in small] * 2
    over = read_pcap(tmp_path / "out" / f"{OVERSIZE_EXIT}.pcap")
    assert [over.frame(i) for i in range(len(over))] == [huge] * 4
    assert over.orig_lengths.tolist() == [70000] * 4 and over.ts_ns.tolist() == [10**18 + 1, 10**18 + 4] * 2
    assert "65535 bytes (the maximum): 4 longer frames dropped whole as oversize" in offline_capacity_note(res)


@pytest.mark.timeout(120)
def test_a_capture_without_packets_is_an_empty_conserved_run(tmp_path: Path) -> None:
    """Nothing is started for a capture without a complete packet; every exit still gets its
    (empty) pcap and the run is conserved. The CLI refuses such a capture in one line (exit 2)."""
    from typer.testing import CliRunner

    from micronf.app.cli import app

    layout = plan(chain_spec(CHAIN), capture_drops=True, on_full="wait")
    res = run_offline(layout, Trace.from_frames([]), tmp_path / "out")
    assert res.fed == 0 and res.balanced and sum(res.per_exit.values()) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{e}.pcap" for e in res.per_exit)
    cut = tmp_path / "cut.pcap"
    wrpcap(str(cut), [Ether() / IP() / UDP()])
    cut.write_bytes(cut.read_bytes()[:-5])  # the only record ends early
    cli = CliRunner().invoke(app, ["chain", "MacSwapper", "--pcap", str(cut), "--out", str(tmp_path / "o2")])
    assert cli.exit_code == 2, cli.output
    assert "holds no complete packet (its only record is truncated)" in cli.output
    assert not (tmp_path / "o2").exists()
