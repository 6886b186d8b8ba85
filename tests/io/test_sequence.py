"""The generator's per-frame sequence stamp and the ``seqcheck`` sink (issue 11 §5).

Stamped frames are parsed with scapy (the number where the module says, checksums still valid,
nothing else changed); the Fig. 11 SFC gives every stamped frame the verdict it gives the
unstamped one; the sink counts a planted duplicate, a frame beyond its capacity, an unstamped
frame and a reordering within a flow, and keeps its state across a restart (a new sink on the
same file).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, in4_chksum
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from micronf.app import run as embedded
from micronf.app.offline import run_offline
from micronf.dataplane.pool import M_HASH, PacketPool
from micronf.dataplane.segment import Segment
from micronf.io.generator import GeneratorRx
from micronf.io.generator_spec import GeneratorSpec, paper_traffic
from micronf.io.sequence import SeqCheckTx, SeqCheckTxSpec, read_seqcheck
from micronf.io.specs import check_tx
from micronf.io.trace import Trace, fill_pool_from_trace

pytestmark = pytest.mark.timeout(300)


def _frames(spec: GeneratorSpec, burst: int = 97) -> list[bytes]:
    """Every frame the generator hands out, in order (bursts of an odd size: windows vary)."""
    rx = GeneratorRx(spec)
    out: list[bytes] = []
    while not rx.exhausted:
        b = rx.recv(burst)
        out += [b.data[o : o + n].tobytes() for o, n in zip(b.off[: b.n], b.length[: b.n], strict=True)]
    return out


def _l4_valid(pkt: Ether) -> bool:
    """The TCP/UDP checksum verifies (the one's complement sum over pseudo-header and segment is 0)."""
    ip = pkt[IP]
    return in4_chksum(ip.proto, ip, bytes(ip.payload)) == 0


def test_stamps_number_every_frame_keep_checksums_and_change_nothing_else() -> None:
    n = 1200  # 1.2 cycles of templates: the same template is stamped again with another number
    base = paper_traffic(count=n, seed=3).model_copy(update={"protocols": {"tcp": 0.5, "udp": 0.5},
                                                            "http_fraction": 0.3})
    plain = _frames(base)
    stamped = _frames(base.model_copy(update={"sequence": True}))
    assert len(plain) == len(stamped) == n
    kinds: Counter[str] = Counter()
    for j, (a, b) in enumerate(zip(plain, stamped, strict=True)):
        pa, pb = Ether(a), Ether(b)
        assert bytes(pa[IP])[:20] == bytes(pb[IP])[:20]  # the IPv4 header (and its checksum) untouched
        assert _l4_valid(pb), j
        if TCP in pb:
            kinds["tcp"] += 1
            assert (pb[TCP].seq << 32) | pb[TCP].ack == j
            assert bytes(pb[TCP].payload) == bytes(pa[TCP].payload)  # HTTP requests unchanged
            assert (pb[TCP].sport, pb[TCP].dport, pb[TCP].flags) == (pa[TCP].sport, pa[TCP].dport, pa[TCP].flags)
        else:
            kinds["udp"] += 1
            payload = bytes(pb[UDP].payload)
            assert int.from_bytes(payload[:8], "big") == j
            assert payload[8:] == bytes(pa[UDP].payload)[8:]
            assert (pb[UDP].sport, pb[UDP].dport, pb[UDP].len) == (pa[UDP].sport, pa[UDP].dport, pa[UDP].len)
    assert kinds["tcp"] > 0 and kinds["udp"] > 0


def test_a_resumed_generator_numbers_on_from_its_position() -> None:
    spec = paper_traffic(count=300, sequence=True)
    rx = GeneratorRx(spec)
    rx.resume(123)
    b = rx.recv(5)
    got = [Ether(b.data[o : o + n].tobytes()) for o, n in zip(b.off[: b.n], b.length[: b.n], strict=True)]
    assert [(p[TCP].seq << 32) | p[TCP].ack for p in got] == list(range(123, 128))


@pytest.mark.slow  # a run of the Fig. 11 graph's processes (~1 min on 2 busy cores)
def test_fig11_gives_stamped_frames_the_verdicts_of_unstamped_ones(tmp_path: Path) -> None:
    n = 2000
    plain, stamped = (_frames(paper_traffic(count=n, sequence=seq)) for seq in (False, True))
    assert all(Ether(f)[TCP].seq != 0 for f in plain)  # so a zero high word tells a stamped frame (j < 2^32)
    comp, _ = embedded.load(None)
    res = run_offline(embedded.offline_layout(comp), Trace.from_frames(plain + stamped, ts_ns=[0] * 2 * n), tmp_path)
    assert res.balanced and res.fed == 2 * n
    by_exit: dict[bool, dict[str, Counter[bytes]]] = {False: {}, True: {}}
    for name, f in res.files.items():
        for p in rdpcap(str(f)):
            by_exit[p[TCP].seq == 0].setdefault(name, Counter())[bytes(p[TCP].payload)] += 1
    assert by_exit[True] == by_exit[False]  # the same requests reach every exit, SQL injections included
    assert len(by_exit[True]) >= 2  # more than one verdict was given


def _send(tx: SeqCheckTx, pool: PacketPool, frames: list[bytes], flow_hash: list[int]) -> None:
    trace = Trace.from_frames(frames, ts_ns=[0] * len(frames))
    hs = pool.alloc(len(frames))
    p = pool.arrays
    fill_pool_from_trace(p, trace.data, trace.offsets, trace.lengths, trace.ts_ns, 0, hs, len(frames))
    for h, fh in zip(hs, flow_hash, strict=True):
        p.words[h, M_HASH] = fh
    assert tx.send(p, hs, len(frames)) == len(frames)
    pool.free(hs)


def test_the_sink_counts_duplicates_strays_and_reordering_across_a_restart(seg_name: str, tmp_path: Path) -> None:
    frames = _frames(paper_traffic(count=40, flows=2, sequence=True))
    f0, f1 = (int(Ether(f)[TCP].sport) for f in frames[:2])
    flow = [int(Ether(f)[TCP].sport) for f in frames]
    assert {f0, f1} == set(flow)
    state = tmp_path / "seq.state"
    state.touch()  # the agent creates the (empty) output file
    spec = check_tx({"kind": "seqcheck", "path": str(state), "capacity": 40})
    assert isinstance(spec, SeqCheckTxSpec)
    seg = Segment.create(seg_name, PacketPool.regions("pool", 64, n_clients=1))
    try:
        PacketPool.format(seg, "pool", 64, n_clients=1)
        pool = PacketPool.attach(seg, "pool")
        tx = SeqCheckTx(spec)
        _send(tx, pool, frames[:20], flow[:20])
        assert tx.stats() == {"frames": 20, "distinct": 20, "duplicates": 0, "out_of_range": 0, "unstamped": 0,
                              "reordered": 0, "capacity": 40}
        tx.close()
        tx = SeqCheckTx(spec)  # a restarted Tx service: the same file, the same bitmap
        late = next(j for j in range(20) if flow[j] == flow[20])  # an earlier frame of frame 20's flow
        beyond = _frames(paper_traffic(count=41, sequence=True))[40]
        plain = bytes(Ether() / IP(src="10.9.0.1", dst="10.9.0.2") / ICMP()).ljust(60, b"\0")  # no place for one
        batch = [frames[20], frames[7], frames[late], beyond, plain, *frames[21:]]
        _send(tx, pool, batch, [flow[20], flow[7], flow[late], 9, 9, *flow[21:]])
        tx.close()
    finally:
        seg.close()
        seg.unlink()
    c = read_seqcheck(state)
    assert c["frames"] == 20 + len(batch)
    assert c["distinct"] == 40 and c["duplicates"] == 2  # frames 7 and `late` came again
    assert c["out_of_range"] == 1  # number 40 of a sink sized for 0..39
    assert c["unstamped"] == 1  # the ICMP frame
    assert c["reordered"] >= 1  # `late` after 20 in the same flow


def test_a_seqcheck_file_of_another_size_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "seq.state"
    state.touch()
    SeqCheckTx(SeqCheckTxSpec(path=state, capacity=100)).close()
    with pytest.raises(ValueError, match="not a seqcheck state file"):
        SeqCheckTx(SeqCheckTxSpec(path=state, capacity=200))


def test_a_number_recorded_at_two_exits_is_a_duplicate(seg_name: str, tmp_path: Path) -> None:
    frames = _frames(paper_traffic(count=10, sequence=True))
    files = [tmp_path / "a.seq", tmp_path / "b.seq"]
    seg = Segment.create(seg_name, PacketPool.regions("pool", 16, n_clients=1))
    try:
        PacketPool.format(seg, "pool", 16, n_clients=1)
        pool = PacketPool.attach(seg, "pool")
        for f, part in zip(files, (frames[:6], frames[5:]), strict=True):  # frame 5 leaves by both
            f.touch()
            tx = SeqCheckTx(SeqCheckTxSpec(path=f, capacity=10))
            _send(tx, pool, part, [0] * len(part))
            tx.close()
    finally:
        seg.close()
        seg.unlink()
    assert [read_seqcheck(f)["duplicates"] for f in files] == [0, 0]
    c = read_seqcheck(*files)
    assert (c["frames"], c["distinct"], c["duplicates"]) == (11, 10, 1)
