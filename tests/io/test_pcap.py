"""pcap/pcapng I/O: scapy (and hand-built bytes) as the independent oracle, error reporting,
truncated captures, 100k-packet files, and replay into / capture out of a real packet pool."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from scapy.all import IP, UDP, Ether, Raw, rdpcap, wrpcap, wrpcapng
from scapy.utils import PcapWriter as ScapyPcapWriter

from micronf.dataplane.pool import DATA_OFF, DEFAULT_FRAME_CAPACITY, M_LEN, PacketPool
from micronf.dataplane.segment import Segment
from micronf.io.pcap_read import read_pcap
from micronf.io.pcap_write import PcapWriter
from micronf.io.trace import MAX_RECORD_LEN, Q_TIMESTAMP_NS, PcapError, Trace, fill_pool_from_trace

T0 = 1_700_000_000  # a plausible capture time, in seconds


def _packets(n: int, seed: int = 1) -> list[bytes]:
    """n distinct Ethernet/IPv4/UDP frames of varied length."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        payload = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        out.append(
            bytes(Ether(src="02:00:00:00:00:01") / IP(dst=f"10.0.{i // 256}.{i % 256}") / UDP(sport=i) / payload)
        )
    return out


def _frames(t: Trace) -> list[bytes]:
    return [t.frame(i) for i in range(len(t))]


# --------------------------------------------------------------------------- hand-built pcapng


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _block(btype: int, body: bytes, e: str = "<") -> bytes:
    body = _pad4(body)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def _shb(e: str = "<") -> bytes:
    return _block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)


def _opt(code: int, value: bytes, e: str = "<") -> bytes:
    return struct.pack(e + "HH", code, len(value)) + _pad4(value)


def _idb(linktype: int = 1, snaplen: int = 0, opts: bytes = b"", e: str = "<") -> bytes:
    if opts:
        opts += struct.pack(e + "HH", 0, 0)
    return _block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts, e)


def _epb(iface: int, ts: int, data: bytes, wirelen: int | None = None, e: str = "<") -> bytes:
    head = struct.pack(e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), wirelen or len(data))
    return _block(6, head + data, e)


def _spb(data: bytes, wirelen: int | None = None, e: str = "<") -> bytes:
    return _block(3, struct.pack(e + "I", wirelen or len(data)) + data, e)


def _classic(records: list[tuple[int, int, bytes]], *, e: str = "<", magic: int = 0xA1B2C3D4, hdr: int = 16) -> bytes:
    """A classic pcap with records (sec, frac, data), byte order ``e``."""
    out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for sec, frac, data in records:
        out += struct.pack(e + "IIII", sec, frac, len(data), len(data) + 4) + b"\xee" * (hdr - 16) + data
    return out


# --------------------------------------------------------------------------- scapy writes, we read


def test_scapy_microsecond_pcap_is_read_exactly(tmp_path: Path) -> None:
    frames = _packets(50)
    pkts = [Ether(f) for f in frames]
    for i, p in enumerate(pkts):
        p.time = Decimal(T0 + i) + Decimal(i * 7919 % 1_000_000) / Decimal(10**6)
    wrpcap(str(tmp_path / "a.pcap"), pkts)
    t = read_pcap(tmp_path / "a.pcap")
    assert (len(t), t.linktype, t.truncated) == (50, 1, False)
    assert _frames(t) == frames
    assert t.ts_ns.tolist() == [(T0 + i) * 10**9 + (i * 7919 % 1_000_000) * 1000 for i in range(50)]
    assert t.orig_lengths.tolist() == [len(f) for f in frames]


def test_scapy_nanosecond_pcap_is_read_exactly(tmp_path: Path) -> None:
    frames = _packets(20)
    w = ScapyPcapWriter(str(tmp_path / "n.pcap"), nano=True)
    expect = []
    for i, f in enumerate(frames):
        p = Ether(f)
        ns = (T0 + i) * 10**9 + 123_456_789 + i
        p.time = Decimal(ns) / Decimal(10**9)
        expect.append(ns)
        w.write(p)
    w.close()
    t = read_pcap(tmp_path / "n.pcap")
    assert _frames(t) == frames
    assert t.ts_ns.tolist() == expect


def test_scapy_pcapng_is_read_exactly(tmp_path: Path) -> None:
    frames = _packets(30)
    pkts = [Ether(f) for f in frames]
    for i, p in enumerate(pkts):
        p.time = Decimal(T0 + i) + Decimal(i * 31) / Decimal(10**6)
    wrpcapng(str(tmp_path / "a.pcapng"), pkts)
    t = read_pcap(tmp_path / "a.pcapng")
    assert (len(t), t.linktype, t.truncated) == (30, 1, False)
    assert _frames(t) == frames
    assert t.ts_ns.tolist() == [(T0 + i) * 10**9 + i * 31_000 for i in range(30)]


# --------------------------------------------------------------------------- we write, scapy reads


@pytest.mark.parametrize("nanosecond", [True, False])
def test_our_pcap_is_read_exactly_by_scapy(tmp_path: Path, nanosecond: bool) -> None:
    frames = _packets(40)
    ts = [(T0 + i) * 10**9 + 987_654_321 - i * 1001 for i in range(40)]
    with PcapWriter(tmp_path / "o.pcap", nanosecond=nanosecond) as w:
        w.write_frames(frames[:25], ts[:25])
        w.write_frames(frames[25:], ts[25:])
        assert w.count == 40
    pkts = rdpcap(str(tmp_path / "o.pcap"))
    assert [bytes(p) for p in pkts] == frames
    unit = 1 if nanosecond else 1000
    assert [int(p.time * 10**9) for p in pkts] == [x // unit * unit for x in ts]
    assert [p.wirelen for p in pkts] == [len(f) for f in frames]


def test_snaplen_cuts_frames_and_keeps_wire_length(tmp_path: Path) -> None:
    frames = [b"\x01" * 50, b"\x02" * 300, b"\x03" * 100]
    with PcapWriter(tmp_path / "s.pcap", snaplen=100) as w:
        w.write_frames(frames)
    pkts = rdpcap(str(tmp_path / "s.pcap"))
    assert [bytes(p) for p in pkts] == [frames[0], frames[1][:100], frames[2]]
    assert [p.wirelen for p in pkts] == [50, 300, 100]
    t = read_pcap(tmp_path / "s.pcap")
    assert (t.lengths.tolist(), t.orig_lengths.tolist()) == ([50, 100, 100], [50, 300, 100])


def test_write_batch_from_buffer_offsets_and_round_trip(tmp_path: Path) -> None:
    buf = np.arange(1000, dtype=np.uint8)  # frames in any order, with gaps between them
    offsets, lengths = [500, 10, 900], [60, 200, 100]
    with PcapWriter(tmp_path / "b.pcap") as w:
        w.write(buf, offsets, lengths, [3, 2, 1], orig_lengths=[60, 1500, 100])
    t = read_pcap(tmp_path / "b.pcap")
    assert _frames(t) == [buf[o : o + n].tobytes() for o, n in zip(offsets, lengths, strict=True)]
    assert (t.ts_ns.tolist(), t.orig_lengths.tolist()) == ([3, 2, 1], [60, 1500, 100])
    with PcapWriter(tmp_path / "c.pcap") as w:
        w.write_trace(t)
    t2 = read_pcap(tmp_path / "c.pcap")
    assert (tmp_path / "c.pcap").read_bytes() == (tmp_path / "b.pcap").read_bytes()
    assert _frames(t2) == _frames(t)


def test_writer_rejects_bad_input_and_closed_use(tmp_path: Path) -> None:
    w = PcapWriter(tmp_path / "x.pcap")
    with pytest.raises(ValueError, match="outside frames_buf"):
        w.write(np.zeros(10, np.uint8), [5], [6], [0])
    with pytest.raises(ValueError, match="timestamp"):
        w.write(np.zeros(10, np.uint8), [0], [4], [-1])
    with pytest.raises(ValueError, match="timestamp"):
        w.write(np.zeros(10, np.uint8), [0], [4], [2**32 * 10**9])
    with pytest.raises(ValueError, match="link type"):
        w.write_trace(Trace.from_frames([b"x"], linktype=101))
    with pytest.raises(ValueError, match="equal length"):
        w.write(np.zeros(10, np.uint8), [0, 1], [4], [0])
    assert w.count == 0
    w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        w.write_frames([b"abc"])
    assert len(read_pcap(tmp_path / "x.pcap")) == 0  # nothing half-written by the rejected batches


def test_empty_capture_is_a_valid_file(tmp_path: Path) -> None:
    with PcapWriter(tmp_path / "e.pcap", linktype=101):
        pass
    assert (tmp_path / "e.pcap").stat().st_size == 24
    t = read_pcap(tmp_path / "e.pcap")
    assert (len(t), t.linktype, t.truncated, t.data.size) == (0, 101, False, 0)
    assert len(rdpcap(str(tmp_path / "e.pcap"))) == 0
    (tmp_path / "e.pcapng").write_bytes(_shb() + _idb(linktype=113))
    t = read_pcap(tmp_path / "e.pcapng")
    assert (len(t), t.linktype) == (0, 113)


# --------------------------------------------------------------------------- hand-built classic files


@pytest.mark.parametrize(("magic", "unit"), [(0xA1B2C3D4, 1000), (0xA1B23C4D, 1)])
@pytest.mark.parametrize("e", ["<", ">"])
def test_classic_pcap_in_both_byte_orders(tmp_path: Path, magic: int, unit: int, e: str) -> None:
    recs = [(T0, 999_999, b"\xaa" * 60), (T0 + 1, 5, b"\xbb" * 61), (0, 0, b"")]
    (tmp_path / "x.pcap").write_bytes(_classic(recs, e=e, magic=magic))
    t = read_pcap(tmp_path / "x.pcap")
    assert _frames(t) == [r[2] for r in recs]
    assert t.ts_ns.tolist() == [s * 10**9 + f * unit for s, f, _ in recs]
    assert t.orig_lengths.tolist() == [64, 65, 4]


def test_modified_pcap_24_byte_records(tmp_path: Path) -> None:
    recs = [(T0, 1, b"\x11" * 42), (T0, 2, b"\x22" * 43)]
    (tmp_path / "m.pcap").write_bytes(_classic(recs, magic=0xA1B2CD34, hdr=24))
    t = read_pcap(tmp_path / "m.pcap")
    assert _frames(t) == [r[2] for r in recs]
    assert t.ts_ns.tolist() == [T0 * 10**9 + 1000, T0 * 10**9 + 2000]


# --------------------------------------------------------------------------- hand-built pcapng


def test_pcapng_two_interfaces_with_different_tsresol_and_unknown_blocks(tmp_path: Path) -> None:
    f0, f1, f2, f3 = b"\x01" * 60, b"\x02" * 61, b"\x03" * 62, b"\x04" * 63
    ts0 = T0 * 10**9 + 123_456_789  # interface 0: if_tsresol 9 (ns)
    ts1 = (T0 << 20) | 0xABCDE  # interface 1: if_tsresol 2^-20 s, if_tsoffset -10 s
    body = (
        _shb()
        + _idb(1, 65535, _opt(9, b"\x09"))  # (scapy reads SPBs of a snaplen-0 interface as empty)
        + _block(0x00000BAD, b"unknown block type")  # skipped
        + _block(4, b"\x00" * 8)  # name resolution block: skipped
        + _idb(1, 262144, _opt(2, b"eth1") + _opt(9, b"\x94") + _opt(14, struct.pack("<q", -10)))
        + _epb(0, ts0, f0)
        + _epb(1, ts1, f1, wirelen=1000)
        + _block(5, b"\x00" * 12)  # interface statistics block: skipped
        + _spb(f2)
        + _epb(1, ts1 + 1, f3)
    )
    (tmp_path / "m.pcapng").write_bytes(body)
    t = read_pcap(tmp_path / "m.pcapng")
    assert _frames(t) == [f0, f1, f2, f3]
    ns1 = ((ts1 * 10**9) >> 20) - 10 * 10**9
    assert t.ts_ns.tolist() == [ts0, ns1, 0, ((ts1 + 1) * 10**9 >> 20) - 10 * 10**9]
    assert t.orig_lengths.tolist() == [60, 1000, 62, 63]
    assert [bytes(p) for p in rdpcap(str(tmp_path / "m.pcapng"))] == [f0, f1, f2, f3]  # the oracle agrees


def test_pcapng_big_endian_sections_reset_interfaces(tmp_path: Path) -> None:
    ps = 10**19 + 987_654_321_987  # picoseconds: above 2**63, so the kernel must divide unsigned
    body = (
        _shb("<")
        + _idb(1, 0, e="<")
        + _epb(0, T0 * 10**6 + 42, b"A" * 20, e="<")  # default resolution: µs
        + _shb(">")
        + _idb(1, 30, _opt(9, b"\x0c", ">"), e=">")  # 10^-12, snaplen 30
        + _epb(0, ps, b"B" * 21, e=">")
        + _spb(b"C" * 30, wirelen=40, e=">")
    )
    (tmp_path / "be.pcapng").write_bytes(body)
    t = read_pcap(tmp_path / "be.pcapng")
    assert _frames(t) == [b"A" * 20, b"B" * 21, b"C" * 30]
    assert t.ts_ns.tolist() == [T0 * 10**9 + 42_000, ps // 1000, 0]
    assert t.orig_lengths.tolist() == [20, 21, 40]


def test_spb_is_cut_to_the_interface_snaplen(tmp_path: Path) -> None:
    (tmp_path / "s.pcapng").write_bytes(_shb() + _idb(1, 16) + _spb(b"x" * 16, wirelen=100))
    t = read_pcap(tmp_path / "s.pcapng")
    assert (_frames(t), t.orig_lengths.tolist()) == ([b"x" * 16], [100])


def test_pcapng_mixed_link_types_are_refused(tmp_path: Path) -> None:
    head = _shb() + _idb(1) + _idb(101)
    first = _epb(0, 1, b"x" * 40)
    (tmp_path / "lt.pcapng").write_bytes(head + first + _epb(1, 2, b"y" * 40))
    with pytest.raises(PcapError, match="link type 101") as err:
        read_pcap(tmp_path / "lt.pcapng")
    assert err.value.offset == len(head + first)
    (tmp_path / "ok.pcapng").write_bytes(head + first)  # an unused interface of another type is fine
    assert len(read_pcap(tmp_path / "ok.pcapng")) == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (_shb() + _idb(1) + _epb(1, 0, b"x"), "interface 1"),
        (_shb() + _epb(0, 0, b"x"), "interface 0"),
        (_shb() + _idb(1, 0, _opt(9, b"\x14")), "if_tsresol 0x14"),
        (_shb() + _idb(1, 0, _opt(9, b"\xc0")), "if_tsresol 0xc0"),
        (_shb() + _idb(1, 0, struct.pack("<HH", 2, 200)), "option 2"),
        (_shb() + struct.pack("<II", 6, 10) + b"\0" * 8, "block length 10"),
        (_shb() + _block(99, b"1234")[:-4] + struct.pack("<I", 99), "block length 16"),
        (_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1)), "version 2"),
        (_block(0x0A0D0D0A, struct.pack("<IHHq", 0x12345678, 1, 0, -1)), "byte-order magic"),
    ],
)
def test_malformed_pcapng_is_refused(tmp_path: Path, body: bytes, match: str) -> None:
    (tmp_path / "bad.pcapng").write_bytes(body)
    with pytest.raises(PcapError, match=match) as err:
        read_pcap(tmp_path / "bad.pcapng")
    assert str(tmp_path / "bad.pcapng") in str(err.value)


def test_epb_captured_length_beyond_its_block_is_refused(tmp_path: Path) -> None:
    blk = bytearray(_epb(0, 0, b"x" * 8))
    struct.pack_into("<I", blk, 20, 64)  # captured length 64 in a block with 8 bytes of data
    (tmp_path / "c.pcapng").write_bytes(_shb() + _idb() + bytes(blk))
    with pytest.raises(PcapError, match="does not fit"):
        read_pcap(tmp_path / "c.pcapng")


# --------------------------------------------------------------------------- errors and truncation


def test_not_a_capture_names_the_file(tmp_path: Path) -> None:
    cases = {
        "garbage.pcap": (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "not a pcap or pcapng"),
        "zipped.pcap.gz": (b"\x1f\x8b\x08\x00" + b"\0" * 40, "gzip"),
        "empty.pcap": (b"", "only 0 bytes"),
        "tiny.pcap": (b"\xd4\xc3", "only 2 bytes"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(PcapError, match=match) as err:
            read_pcap(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
        assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("name", ["h.pcap", "h.pcapng"])
def test_truncated_header_is_an_error(tmp_path: Path, name: str) -> None:
    whole = _classic([(1, 1, b"x" * 10)]) if name.endswith(".pcap") else _shb() + _idb()
    (tmp_path / name).write_bytes(whole[:20])
    with pytest.raises(PcapError, match="truncated"):
        read_pcap(tmp_path / name)


@pytest.mark.parametrize("cut", [1, 8, 15, 16, 17, 45])  # inside the last record header, then its data
def test_truncated_last_record_keeps_the_complete_ones(tmp_path: Path, cut: int) -> None:
    recs = [(T0, i, bytes([i]) * 46) for i in range(3)]
    whole = _classic(recs)
    (tmp_path / "t.pcap").write_bytes(whole[: len(whole) - 62 + cut])
    t = read_pcap(tmp_path / "t.pcap")
    assert (len(t), t.truncated) == (2, True)
    assert _frames(t) == [r[2] for r in recs[:2]]
    with pytest.raises(PcapError, match="truncated record") as err:
        read_pcap(tmp_path / "t.pcap", strict=True)
    assert err.value.offset == len(whole) - 62
    (tmp_path / "whole.pcap").write_bytes(whole)
    assert not read_pcap(tmp_path / "whole.pcap", strict=True).truncated


def test_truncated_pcapng_keeps_the_complete_blocks(tmp_path: Path) -> None:
    head = _shb() + _idb() + _epb(0, 5, b"a" * 50)
    (tmp_path / "t.pcapng").write_bytes(head + _epb(0, 6, b"b" * 50)[:-10])
    t = read_pcap(tmp_path / "t.pcapng")
    assert (_frames(t), t.truncated) == ([b"a" * 50], True)
    with pytest.raises(PcapError) as err:
        read_pcap(tmp_path / "t.pcapng", strict=True)
    assert err.value.offset == len(head)


def test_absurd_record_length_is_an_error_not_truncation(tmp_path: Path) -> None:
    whole = bytearray(_classic([(1, 1, b"x" * 10), (1, 2, b"y" * 10)]))
    struct.pack_into("<I", whole, 24 + 26 + 8, MAX_RECORD_LEN + 1)
    (tmp_path / "a.pcap").write_bytes(bytes(whole))
    with pytest.raises(PcapError, match="exceeds the limit") as err:
        read_pcap(tmp_path / "a.pcap")
    assert err.value.offset == 24 + 26
    struct.pack_into("<I", whole, 24 + 26 + 8, 262145)  # > both the snaplen (65535) and 262144
    (tmp_path / "a.pcap").write_bytes(bytes(whole))
    with pytest.raises(PcapError, match="262145"):
        read_pcap(tmp_path / "a.pcap")


def test_read_from_a_pipe(tmp_path: Path) -> None:
    whole = _classic([(T0, 7, b"p" * 99)])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(whole)

    th = threading.Thread(target=feed)
    th.start()
    t = read_pcap(fifo)
    th.join(10)
    assert (_frames(t), t.ts_ns.tolist()) == ([b"p" * 99], [T0 * 10**9 + 7000])


# --------------------------------------------------------------------------- Trace


def test_trace_from_frames_and_validation() -> None:
    t = Trace.from_frames([b"ab", b"", b"cde"], ts_ns=[1, 2, 3], linktype=101)
    assert (len(t), t.frame(0), t.frame(1), t.frame(-1), t.linktype) == (3, b"ab", b"", b"cde", 101)
    assert (t.offsets.tolist(), t.lengths.tolist(), t.ts_ns.tolist()) == ([0, 2, 2], [2, 0, 3], [1, 2, 3])
    with pytest.raises(IndexError):
        t.frame(3)
    with pytest.raises(ValueError, match="2 entries for 3 frames"):
        Trace.from_frames([b"a", b"b", b"c"], ts_ns=[1, 2])
    with pytest.raises(ValueError, match="inside data"):
        Trace(t.data, t.offsets + 1, t.lengths, t.orig_lengths, t.ts_ns)
    with pytest.raises(TypeError, match="int32"):
        Trace(t.data, t.offsets, t.lengths.astype(np.int64), t.orig_lengths, t.ts_ns)  # type: ignore[arg-type]
    assert len(Trace.from_frames([])) == 0


# --------------------------------------------------------------------------- 100k packets


def _bulk_lengths(n: int) -> np.ndarray:
    return (60 + (np.arange(n) % 32) * 4).astype(np.int64)  # multiples of 4: no pcapng padding


def _data_mask(size: int, starts: np.ndarray, head: int, hdr: int, tail: int, lengths: np.ndarray) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[head:] = True
    mask[(starts[:, None] + np.arange(hdr)).ravel()] = False
    if tail:
        mask[(starts + hdr + lengths)[:, None] + np.arange(tail)] = False
    return mask


def test_100k_packet_classic_pcap(tmp_path: Path) -> None:
    n = 100_000
    lengths = _bulk_lengths(n)
    rec = 16 + lengths
    starts = 24 + np.concatenate(([0], np.cumsum(rec)[:-1]))
    size = int(24 + rec.sum())
    raw = np.random.default_rng(5).integers(0, 256, size, dtype=np.uint8)
    raw[:24] = np.frombuffer(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1), np.uint8)
    words = raw.view(np.uint32)  # every record starts 4-aligned
    ts = T0 * 10**9 + np.arange(n, dtype=np.int64) * 1_234_567
    w0 = starts // 4
    words[w0], words[w0 + 1] = ts // 10**9, ts % 10**9
    words[w0 + 2], words[w0 + 3] = lengths, lengths + 1
    raw.tofile(tmp_path / "big.pcap")
    t0 = time.perf_counter()
    t = read_pcap(tmp_path / "big.pcap")
    dt = time.perf_counter() - t0
    print(f"classic pcap: {n} packets in {dt * 1e3:.1f} ms = {n / dt / 1e6:.1f} Mpkt/s")
    assert (len(t), t.truncated) == (n, False)
    assert np.array_equal(t.lengths, lengths) and np.array_equal(t.orig_lengths, lengths + 1)
    assert np.array_equal(t.ts_ns, ts)
    assert np.array_equal(t.data, raw[_data_mask(size, starts, 24, 16, 0, lengths)])


def test_100k_packet_pcapng(tmp_path: Path) -> None:
    n = 100_000
    lengths = _bulk_lengths(n)
    head = _shb() + _idb(1, 0, _opt(9, b"\x09"))
    blk = 32 + lengths
    starts = len(head) + np.concatenate(([0], np.cumsum(blk)[:-1]))
    size = int(len(head) + blk.sum())
    raw = np.random.default_rng(6).integers(0, 256, size, dtype=np.uint8)
    raw[: len(head)] = np.frombuffer(head, np.uint8)
    words = raw.view(np.uint32)
    ts = T0 * 10**9 + np.arange(n, dtype=np.int64) * 777
    w0 = starts // 4
    words[w0], words[w0 + 1], words[w0 + 2] = 6, blk, 0
    words[w0 + 3], words[w0 + 4] = ts >> 32, ts & 0xFFFFFFFF
    words[w0 + 5], words[w0 + 6] = lengths, lengths
    words[(starts + blk) // 4 - 1] = blk
    raw.tofile(tmp_path / "big.pcapng")
    t0 = time.perf_counter()
    t = read_pcap(tmp_path / "big.pcapng")
    dt = time.perf_counter() - t0
    print(f"pcapng: {n} packets in {dt * 1e3:.1f} ms = {n / dt / 1e6:.1f} Mpkt/s")
    assert (len(t), t.truncated) == (n, False)
    assert np.array_equal(t.lengths, lengths) and np.array_equal(t.ts_ns, ts)
    assert np.array_equal(t.data, raw[_data_mask(size, starts, len(head), 28, 4, lengths)])


# --------------------------------------------------------------------------- the packet pool


def _pool_segment(seg_name: str, n_slots: int, frame_capacity: int = DEFAULT_FRAME_CAPACITY) -> Segment:
    seg = Segment.create(seg_name, PacketPool.regions("pool", n_slots, frame_capacity, n_clients=1))
    PacketPool.format(seg, "pool", n_slots, frame_capacity, n_clients=1)
    return seg


def test_fill_pool_then_gather_round_trip_and_write_pool(seg_name: str, tmp_path: Path) -> None:
    frames = _packets(10)
    trace = Trace.from_frames(frames, ts_ns=[T0 * 10**9 + i * 1001 for i in range(10)])
    with _pool_segment(seg_name, 16) as seg:
        pool = PacketPool.attach(seg, "pool")
        p = pool.arrays
        hs = pool.alloc(10)
        fill_pool_from_trace(p, trace.data, trace.offsets, trace.lengths, trace.ts_ns, 0, hs, 10)
        assert [pool.read_frame(int(h)) for h in hs] == frames
        assert [int(p.qwords[h, Q_TIMESTAMP_NS]) for h in hs] == trace.ts_ns.tolist()
        with PcapWriter(tmp_path / "sink.pcap") as w:
            w.write_pool(p, hs[::-1].copy(), 10)  # a sink writes in the order it received
            w.write_pool(p, hs, 0)
            w.write_pool(p, hs[:3], 3)  # its buffer is kept from batch to batch
            assert w.count == 13
    got = rdpcap(str(tmp_path / "sink.pcap"))
    assert [bytes(x) for x in got] == frames[::-1] + frames[:3]
    assert [int(x.time * 10**9) for x in got] == trace.ts_ns.tolist()[::-1] + trace.ts_ns.tolist()[:3]


def test_write_pool_grows_its_buffer_cuts_to_snaplen_and_refuses_bad_timestamps(seg_name: str,
                                                                                 tmp_path: Path) -> None:
    frames = [bytes([i]) * n for i, n in enumerate([60, 1500, 9000, 70])]
    trace = Trace.from_frames(frames, ts_ns=[T0 * 10**9 + i for i in range(4)])
    with _pool_segment(seg_name, 8, frame_capacity=9000) as seg:
        pool = PacketPool.attach(seg, "pool")
        hs = pool.alloc(4)
        fill_pool_from_trace(pool.arrays, trace.data, trace.offsets, trace.lengths, trace.ts_ns, 0, hs, 4)
        with PcapWriter(tmp_path / "a.pcap") as w, PcapWriter(tmp_path / "cut.pcap", snaplen=100) as cut:
            w.write_pool(pool.arrays, hs[:1], 1)
            w.write_pool(pool.arrays, hs, 4)  # 10 KiB of frames: more than the buffer so far
            cut.write_pool(pool.arrays, hs, 4)
        a, c = read_pcap(tmp_path / "a.pcap"), read_pcap(tmp_path / "cut.pcap")
        assert [a.frame(i) for i in range(5)] == frames[:1] + frames
        assert [c.frame(i) for i in range(4)] == [f[:100] for f in frames]
        assert c.orig_lengths.tolist() == [60, 1500, 9000, 70]
        pool.arrays.qwords[hs[2], Q_TIMESTAMP_NS] = -1
        with PcapWriter(tmp_path / "bad.pcap") as w, pytest.raises(ValueError, match="frame 2: timestamp -1 ns"):
            w.write_pool(pool.arrays, hs, 4)
    assert len(read_pcap(tmp_path / "bad.pcap")) == 0  # nothing of the refused batch


def test_fill_pool_loops_around_the_trace(seg_name: str) -> None:
    frames = [bytes([i]) * (60 + i) for i in range(5)]
    trace = Trace.from_frames(frames, ts_ns=[10, 20, 30, 40, 50])
    with _pool_segment(seg_name, 16) as seg:
        pool = PacketPool.attach(seg, "pool")
        hs = pool.alloc(12)
        fill_pool_from_trace(pool.arrays, trace.data, trace.offsets, trace.lengths, trace.ts_ns, 3, hs, 12)
        order = [(3 + i) % 5 for i in range(12)]
        assert [pool.read_frame(int(h)) for h in hs] == [frames[j] for j in order]
        assert [int(pool.arrays.qwords[h, Q_TIMESTAMP_NS]) for h in hs] == [10 * (j + 1) for j in order]
        hs2 = pool.alloc(2)  # a start far past the end of the trace (a long looped replay)
        fill_pool_from_trace(pool.arrays, trace.data, trace.offsets, trace.lengths, trace.ts_ns, 10**12 + 4, hs2, 2)
        assert [pool.read_frame(int(h)) for h in hs2] == [frames[4], frames[0]]
        e = Trace.from_frames([])
        with pytest.raises(ValueError, match="empty trace"):
            fill_pool_from_trace(pool.arrays, e.data, e.offsets, e.lengths, e.ts_ns, 0, hs2, 2)


def test_fill_pool_never_writes_past_the_slot(seg_name: str) -> None:
    """Callers feed only frames within the frame capacity (the offline runner diverts longer ones
    to its oversize exit); a longer frame is still kept inside its slot, not the next one."""
    big = bytes(range(256)) * 12  # 3072 bytes > the default slot's room
    trace = Trace.from_frames([big, b"small"])
    with _pool_segment(seg_name, 4) as seg:
        pool = PacketPool.attach(seg, "pool")
        hs = pool.alloc(2)
        fill_pool_from_trace(pool.arrays, trace.data, trace.offsets, trace.lengths, trace.ts_ns, 0, hs, 2)
        room = pool.slot_size - DATA_OFF
        assert int(pool.arrays.words[hs[0], M_LEN]) == room
        assert pool.read_frame(int(hs[0])) == big[:room]
        assert pool.read_frame(int(hs[1])) == b"small"  # the neighbouring slot is intact


# --------------------------------------------------------------------------- tcpdump


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed (CI may install it)")
@pytest.mark.parametrize("nanosecond", [True, False])
def test_tcpdump_reads_our_output(tmp_path: Path, nanosecond: bool) -> None:
    frames = [bytes(Ether() / IP(dst="192.0.2.1") / UDP(sport=1000 + i, dport=53) / Raw(b"q" * i)) for i in range(7)]
    with PcapWriter(tmp_path / "t.pcap", nanosecond=nanosecond) as w:
        w.write_frames(frames, [T0 * 10**9 + i for i in range(7)])
    res = subprocess.run(
        ["tcpdump", "-r", str(tmp_path / "t.pcap"), "-nn"], capture_output=True, text=True, timeout=30, check=False
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 7
    assert all("192.0.2.1.53" in line for line in lines)
