"""Hypothesis over the capture reader (issue 12): any input is a capture or one clear error.

Every input — random bytes, pcap and pcapng files with random headers, record and block lengths
(huge ones too), options and cuts, and random corruptions of valid captures of every link type —
either reads as a :class:`Trace` whose frames lie inside the file's bytes, or raises
:class:`PcapError` with a one-line message naming the file. Never another exception, a crash of
the compiled parser, a hang, or an allocation larger than the file (plus one Ethernet header per
packet for the link-type conversion). The CLI turns those errors into one ``error:`` line.

300 examples per strategy in CI (a few seconds); ``FUZZ_EXAMPLES=20000`` runs longer (20,000 per
strategy passed in 8 minutes when this was written).
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import CookedLinux, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap, wrpcapng

from micronf.io.linktype import read_ethernet
from micronf.io.trace import PcapError, Trace

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
MAGICS = [0xA1B2C3D4, 0xA1B23C4D, 0xA1B2CD34, 0xD4C3B2A1, 0x12345678]
U32_EDGES = st.sampled_from([0, 1, 13, 14, 15, 16, 20, 65535, 65536, 262144, 262145, 1 << 28, (1 << 28) + 1,
                             0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
U32 = st.one_of(U32_EDGES, st.integers(0, 0xFFFFFFFF))


@pytest.fixture(scope="module")
def where(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file each example is written to (module-scoped: hypothesis runs many examples per test)."""
    return tmp_path_factory.mktemp("fuzz") / "in.pcap"


def _check(path: Path, data: bytes) -> None:
    """Read ``data`` as a capture file: a Trace within bounds, or a one-line PcapError."""
    path.write_bytes(data)
    try:
        t = read_ethernet(path)
    except PcapError as exc:
        msg = str(exc)
        assert msg.startswith(str(path)) and "\n" not in msg and len(msg) < 400, msg
        return
    assert isinstance(t, Trace)  # its constructor checked that every frame lies inside ``data``
    assert t.data.shape[0] <= len(data) + 14 * len(t)
    assert len(t) <= len(data) // 12  # a record (or block) takes at least 12 bytes


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(where: Path, data: bytes) -> None:
    _check(where, data)


@st.composite
def classic_pcap(draw: st.DrawFn) -> bytes:
    """A classic pcap header (any magic, version, snaplen, link type) and records with arbitrary
    length fields and bodies, cut anywhere."""
    magic = draw(st.sampled_from(MAGICS))
    big = draw(st.booleans())
    order = ">" if big else "<"
    head = struct.pack(order + "IHHiIII", magic, draw(st.sampled_from([2, 1, 3])), 4, 0, 0, draw(U32),
                       draw(st.sampled_from([1, 101, 113, 276, 12, 105, 0xFFFFFFFF])))
    recs = b""
    hdr = 24 if magic == 0xA1B2CD34 else 16
    for _ in range(draw(st.integers(0, 5))):
        body = draw(st.binary(max_size=80))
        caplen = draw(st.one_of(st.just(len(body)), U32))
        recs += struct.pack(order + "IIII", draw(U32), draw(U32), caplen, draw(U32)) + bytes(hdr - 16) + body
    data = head + recs
    return data[: draw(st.integers(0, len(data)))]


@FUZZ
@given(classic_pcap())
def test_classic_pcap_with_arbitrary_fields(where: Path, data: bytes) -> None:
    _check(where, data)


def _block(order: str, btype: int, body: bytes, blen: int | None = None) -> bytes:
    body += bytes(-len(body) % 4)
    n = 12 + len(body) if blen is None else blen
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


@st.composite
def pcapng(draw: st.DrawFn) -> bytes:
    """Section headers (either byte order, any version), interface blocks with random options
    (if_tsresol, if_tsoffset, lengths past the block), packet blocks of every kind with arbitrary
    interface ids and lengths, unknown blocks and wrong block lengths, cut anywhere."""
    out = b""
    for _ in range(draw(st.integers(1, 2))):
        order = draw(st.sampled_from(["<", ">"]))
        bom = draw(st.sampled_from([0x1A2B3C4D, 0x1A2B3C4D, 0x11223344]))
        out += _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", bom, draw(st.sampled_from([1, 1, 2])), 0, -1))
        for _ in range(draw(st.integers(0, 6))):
            kind = draw(st.sampled_from(["idb", "epb", "spb", "pb", "other", "badlen"]))
            if kind == "idb":
                opts = b""
                for _ in range(draw(st.integers(0, 3))):
                    code = draw(st.sampled_from([9, 14, 2, 0]))
                    val = draw(st.binary(max_size=9))
                    olen = draw(st.one_of(st.just(len(val)), st.integers(0, 0xFFFF)))
                    opts += struct.pack(order + "HH", code, olen) + val + bytes(-len(val) % 4)
                lt = draw(st.sampled_from([1, 101, 113, 276, 105]))
                out += _block(order, 1, struct.pack(order + "HHI", lt, 0, draw(U32)) + opts)
            elif kind in ("epb", "pb"):
                body = draw(st.binary(max_size=64))
                iface, caplen, wlen = draw(st.integers(0, 3)), draw(st.one_of(st.just(len(body)), U32)), draw(U32)
                fields = (struct.pack(order + "I", iface) if kind == "epb" else struct.pack(order + "HH", iface, 0))
                out += _block(order, 6 if kind == "epb" else 2,
                              fields + struct.pack(order + "IIII", draw(U32), draw(U32), caplen, wlen) + body)
            elif kind == "spb":
                body = draw(st.binary(max_size=64))
                out += _block(order, 3, struct.pack(order + "I", draw(U32)) + body)
            elif kind == "other":
                out += _block(order, draw(st.sampled_from([4, 5, 10, 0x80000001])), draw(st.binary(max_size=40)))
            else:
                out += _block(order, draw(st.sampled_from([1, 3, 6])), draw(st.binary(max_size=40)), draw(U32))
    return out[: draw(st.integers(0, len(out)))]


@FUZZ
@given(pcapng())
def test_pcapng_with_arbitrary_blocks(where: Path, data: bytes) -> None:
    _check(where, data)


def _valid_captures() -> list[bytes]:
    pkts = [Ether() / IP(dst="192.0.2.1") / UDP(dport=53 + i) / Raw(b"x" * i) for i in range(4)]
    cooked = [CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02" * 8, proto=0x0800) / p[IP] for p in pkts]
    files = []
    with tempfile.TemporaryDirectory() as d:
        f = str(Path(d) / "f")
        for write in (lambda: wrpcap(f, pkts), lambda: wrpcapng(f, pkts),
                      lambda: wrpcap(f, [p[IP] for p in pkts], linktype=101),
                      lambda: wrpcap(f, cooked, linktype=113), lambda: wrpcapng(f, cooked)):
            write()
            files.append(Path(f).read_bytes())
    return files


VALID = _valid_captures()


@FUZZ
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       st.integers(0, 10**6))
def test_corrupted_valid_captures(where: Path, data: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    _check(where, bytes(buf[: len(buf) - cut % (len(buf) + 1)]))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a capture file: only 0 bytes"),
        (b"\xd4\xc3\xb2", "not a capture file: only 3 bytes"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header (6 of 24 bytes)"),
        (b"GIF89a" + bytes(40), "not a pcap or pcapng file (starts with 0x47494638)"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "gzip-compressed file: decompress it first"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 60),
         "record captured length 4294967280 exceeds the limit of 262144 bytes"),
    ],
    ids=["empty", "three-bytes", "cut-header", "gif", "gzip", "huge-caplen"],
)
def test_cli_turns_invalid_captures_into_one_line(data: bytes, message: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from micronf.app.cli import app

    (tmp_path / "in.pcap").write_bytes(data)
    res = CliRunner().invoke(app, ["chain", "MacSwapper", "--pcap", str(tmp_path / "in.pcap"),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())  # the console may wrap the line at its width
    assert text.startswith("error:") and text.count("error:") == 1 and message in text, res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()
