"""AF_PACKET backend over veth pairs in throw-away namespaces: frames built with scapy go in one
end and must come out of the other byte for byte, in order (VLAN tags included); the Tx modes send
pool frames the same way; errors name the interface; nothing is left behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import ValidationError
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from micronf.dataplane.pool import PacketPool
from micronf.io.afpacket import AfPacketPermissionError, AfPacketSpec, InterfaceNotFoundError, NetnsNotFoundError
from micronf.io.afpacket_rx import AfPacketRx
from micronf.io.afpacket_tx import AfPacketTx
from micronf.io.backend import RxBackend, TxBackend
from micronf.io.trace import Trace, fill_pool_from_trace

from .. import netns
from ..netns import NetLab, namespaces_with_prefix, send_frames
from ..shards import flow_key, multi_flow_frames

lab = netns.lab  # the fixture, under the name the tests ask for

TX_MODES = ["sendmmsg", "ring"]
SRC, DST = "02:00:00:00:00:01", "02:00:00:00:00:02"


@pytest.fixture(scope="module", autouse=True)
def _no_namespace_left() -> Iterator[None]:
    yield
    assert namespaces_with_prefix(f"mnft-{os.getpid()}-") == []


def udp(total: int, tag: int = 0) -> bytes:
    """An Ethernet/IPv4/UDP frame of exactly ``total`` bytes, payload bytes derived from ``tag``."""
    head = Ether(src=SRC, dst=DST) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + tag % 50000, dport=9)
    pad = total - len(head)
    return bytes(head / Raw(bytes((tag + i) & 0xFF for i in range(pad))))


def vlan(total: int, vid: int) -> bytes:
    head = Ether(src=SRC, dst=DST) / Dot1Q(vlan=vid, prio=5) / IP() / UDP()
    return bytes(head / Raw(b"q" * (total - len(head))))


def qinq(total: int) -> bytes:
    head = Ether(src=SRC, dst=DST) / Dot1AD(vlan=7) / Dot1Q(vlan=100) / IP() / UDP()
    return bytes(head / Raw(b"d" * (total - len(head))))


def mixed_frames() -> list[bytes]:
    sizes = [60, 61, 64, 127, 128, 255, 333, 512, 777, 1023, 1024, 1499, 1513, 1514]
    frames = [udp(s, i) for i, s in enumerate(sizes)]
    frames += [vlan(60, 1), vlan(101, 4094), vlan(1518, 42), qinq(99), qinq(1514)]
    frames += [bytes(Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / Raw(b"\x00" * 47))]
    return frames


def collect(rx: AfPacketRx, count: int, max_frames: int = 256, timeout: float = 20) -> list[bytes]:
    """Frames from ``rx`` until ``count`` arrived or ``timeout`` s passed (copies)."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        b = rx.recv(max_frames)
        got += [b.data[int(b.off[i]) : int(b.off[i]) + int(b.length[i])].tobytes() for i in range(b.n)]
    return got


def drain(rx: AfPacketRx, seconds: float = 0.3) -> list[bytes]:
    """Whatever ``rx`` gets within ``seconds`` (longer than a block timeout)."""
    return collect(rx, 1 << 30, timeout=seconds)


def pool_with(frames: list[bytes]) -> tuple[PacketPool, np.ndarray]:
    pool = PacketPool.local(len(frames) + 8)
    handles = pool.alloc(len(frames))
    trace = Trace.from_frames(frames)
    fill_pool_from_trace(pool.arrays, trace.data, trace.offsets, trace.lengths, trace.ts_ns, 0, handles, len(frames))
    return pool, handles


# --------------------------------------------------------------------------- Rx


def test_rx_gets_every_frame_byte_for_byte_in_order(lab: NetLab) -> None:
    a, b = lab.netns(2)
    link = lab.veth(a, b)
    frames = mixed_frames()
    with AfPacketRx(AfPacketSpec(iface=link.if_b, netns=b)) as rx:
        assert isinstance(rx, RxBackend) and not rx.exhausted
        assert lab.call(a, send_frames, link.if_a, frames) == len(frames)
        got = collect(rx, len(frames))
        assert got == frames  # VLAN and QinQ tags are back in place, nothing is padded or cut
        assert drain(rx) == []
        stats = rx.stats()
    assert stats["frames"] == len(frames)
    assert stats["bytes"] == sum(map(len, frames))
    assert (stats["kernel_drops"], stats["truncated"]) == (0, 0)


def test_rx_marks_frames_the_kernel_cut_with_their_negative_wire_length(lab: NetLab) -> None:
    """A frame longer than a ring block is cut by the kernel: it is handed out with length
    ``-wire length`` (the Rx service then drops it whole as oversize), never as a short frame."""
    a, b = lab.netns(2)
    link = lab.veth(a, b, mtu=9000)
    frames = [udp(100, 1), udp(3000, 2), udp(8000, 3), udp(60, 4)]
    with AfPacketRx(AfPacketSpec(iface=link.if_b, netns=b, block_size=4096, block_count=8)) as rx:
        assert lab.call(a, send_frames, link.if_a, frames) == len(frames)
        lengths: list[int] = []
        kept: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(lengths) < len(frames) and time.monotonic() < deadline:
            batch = rx.recv(64)
            for i in range(batch.n):
                n = int(batch.length[i])
                lengths.append(n)
                if n >= 0:
                    kept.append(batch.data[int(batch.off[i]) : int(batch.off[i]) + n].tobytes())
        stats = rx.stats()
    assert lengths == [100, 3000, -8000, 60]
    assert kept == [frames[0], frames[1], frames[3]]
    assert stats["truncated"] == 1


def test_rx_hands_blocks_over_in_pieces_and_loses_nothing_when_paced(lab: NetLab) -> None:
    a, b = lab.netns(2)
    link = lab.veth(a, b)
    frames = [udp(60 + (i * 37) % 400, i) for i in range(12000)]  # ~4.3 MB: 4x around a 1 MiB ring
    spec = AfPacketSpec(iface=link.if_b, netns=b, block_size=1 << 16, block_count=16)
    with AfPacketRx(spec) as rx:
        # <= 25k frames/s: the ring holds > 100 ms of traffic, slack for a loaded machine (the Rx
        # kernel is compiled / loaded when the socket opens, not at the first recv).
        sender = lab.spawn(a, send_frames, link.if_a, frames, 50, 0.002)
        got = collect(rx, len(frames), max_frames=7, timeout=60)  # 7: blocks always span several calls
        assert sender.result(30) == len(frames)
        stats = rx.stats()
    assert len(got) == len(frames)
    assert got == frames
    assert stats["blocks"] > 2 * spec.block_count  # went around the ring more than twice
    assert stats["kernel_drops"] == 0 and stats["kernel_freezes"] == 0


def test_rx_counts_kernel_drops_when_nobody_reads(lab: NetLab) -> None:
    a, b = lab.netns(2)
    link = lab.veth(a, b)
    frames = [udp(1000, i) for i in range(400)]  # ~400 KB into a 2 x 64 KiB ring
    with AfPacketRx(AfPacketSpec(iface=link.if_b, netns=b, block_size=1 << 16, block_count=2)) as rx:
        lab.call(a, send_frames, link.if_a, frames)
        time.sleep(0.05)
        got = drain(rx)
        stats = rx.stats()
        assert stats["kernel_drops"] > 0
        assert stats["kernel_drops"] + len(got) == len(frames)
        assert rx.stats()["kernel_drops"] == stats["kernel_drops"]  # accumulated, not reset by the read
    assert got == frames[: len(got)]  # what did arrive is the prefix, intact


# --------------------------------------------------------------------------- Tx


@pytest.mark.parametrize("mode", TX_MODES)
def test_tx_sends_pool_frames_byte_for_byte(lab: NetLab, mode: str) -> None:
    a, b = lab.netns(2)
    link = lab.veth(a, b, mtu=1200)
    good = [udp(s, s) for s in (60, 61, 200, 999, 1213, 1214)] + [vlan(1218, 3), vlan(64, 9), qinq(1214)]
    too_long = [udp(1215, 1), udp(1500, 2), vlan(1219, 3), qinq(1215)]  # MTU 1200: 1214 (+4 for 802.1Q)
    too_short = [b"\x02" * 13]
    frames = [*good[:3], too_long[0], *good[3:6], too_short[0], too_long[1], *good[6:], *too_long[2:]]
    pool, handles = pool_with(frames)
    with AfPacketRx(AfPacketSpec(iface=link.if_b, netns=b)) as rx, \
            AfPacketTx(AfPacketSpec(iface=link.if_a, netns=a, tx_mode=mode)) as tx:
        assert isinstance(tx, TxBackend)
        assert tx.mtu == 1200
        assert tx.send(pool.arrays, handles, len(frames)) == len(frames)  # bad frames are taken (and counted)
        tx.flush()
        assert collect(rx, len(good)) == good
        assert drain(rx) == []
        stats = tx.stats()
    assert (stats["frames"], stats["bytes"]) == (len(good), sum(map(len, good)))
    assert (stats["too_long"], stats["too_short"], stats["send_failed"]) == (len(too_long), 1, 0)
    assert stats["errors"] == len(too_long) + 1
    assert pool.read_frame(int(handles[0])) == frames[0]  # Tx never changes or frees the slots


@pytest.mark.parametrize("mode", TX_MODES)
def test_tx_many_batches_arrive_in_order(lab: NetLab, mode: str) -> None:
    a, b = lab.netns(2)
    link = lab.veth(a, b)
    frames = [udp(60 + (i * 53) % 1450, i) for i in range(256)]
    pool, handles = pool_with(frames)
    spec = AfPacketSpec(iface=link.if_a, netns=a, tx_mode=mode, block_size=1 << 16, tx_ring_frames=64)
    with AfPacketRx(AfPacketSpec(iface=link.if_b, netns=b)) as rx, AfPacketTx(spec) as tx:
        expected: list[bytes] = []
        for rnd in range(8):  # the 64-frame Tx ring wraps many times
            batch = handles[rnd * 32 % 256 :][:32]
            sent = 0
            while sent < batch.shape[0]:
                k = tx.send(pool.arrays, batch[sent:], batch.shape[0] - sent)
                sent += k
                if k == 0:
                    time.sleep(0.001)
            expected += [frames[int(h)] for h in batch]
            assert collect(rx, 32) == expected[-32:]
        assert tx.stats()["frames"] == len(expected)


def test_outgoing_frames_are_not_received_on_the_sending_interface(lab: NetLab) -> None:
    a, b = lab.netns(2)
    link = lab.veth(a, b)
    frames = [udp(100, i) for i in range(10)]
    pool, handles = pool_with(frames)
    with AfPacketRx(AfPacketSpec(iface=link.if_a, netns=a)) as own, \
            AfPacketRx(AfPacketSpec(iface=link.if_a, netns=a, ignore_outgoing=False)) as tap, \
            AfPacketRx(AfPacketSpec(iface=link.if_b, netns=b)) as peer, \
            AfPacketTx(AfPacketSpec(iface=link.if_a, netns=a)) as tx:
        assert tx.send(pool.arrays, handles, len(frames)) == len(frames)
        assert collect(peer, len(frames)) == frames
        assert collect(tap, len(frames)) == frames  # the frames did leave through if_a ...
        assert drain(own) == []  # ... and an Rx with the default spec does not see them


# --------------------------------------------------------------------------- errors and lifecycle


@pytest.mark.parametrize("cls", [AfPacketRx, AfPacketTx])
def test_missing_interface_and_namespace_are_named(lab: NetLab, cls: type[AfPacketRx] | type[AfPacketTx]) -> None:
    (a,) = lab.netns(1)
    with pytest.raises(InterfaceNotFoundError, match=r"no interface 'nosuch0' in netns 'mnft-") as err:
        cls(AfPacketSpec(iface="nosuch0", netns=a))
    assert isinstance(err.value, OSError)
    gone = f"{lab.prefix}never"
    with pytest.raises(NetnsNotFoundError, match=rf"network namespace '{gone}' for interface 'eth9'.*ip netns add"):
        cls(AfPacketSpec(iface="eth9", netns=gone))


def _open_rx_as_nobody(iface: str, netns: str) -> str:
    os.setgid(65534)
    os.setuid(65534)  # no CAP_NET_RAW / CAP_SYS_ADMIN any more
    for kw in ({"netns": netns}, {}):
        try:
            AfPacketRx(AfPacketSpec(iface=iface, **kw))
        except AfPacketPermissionError as exc:
            assert iface in str(exc)
            continue
        return f"opened with {kw}"
    return "refused"


def test_not_permitted_is_a_clear_permission_error(lab: NetLab) -> None:
    (a,) = lab.netns(1)
    assert lab.call(None, _open_rx_as_nobody, "lo", a) == "refused"


def test_close_is_idempotent_and_counters_stay_readable(lab: NetLab) -> None:
    a, b = lab.netns(2)
    link = lab.veth(a, b)
    rx = AfPacketRx(AfPacketSpec(iface=link.if_b, netns=b))
    batch = rx.recv(8)  # a batch still viewing the ring when it is closed
    rx.close()
    rx.close()
    assert batch.n == 0 and rx.stats()["frames"] == 0
    with pytest.raises(ValueError, match="closed"):
        rx.recv(8)
    for mode in TX_MODES:
        tx = AfPacketTx(AfPacketSpec(iface=link.if_a, netns=a, tx_mode=mode))
        tx.close()
        tx.close()
        tx.flush()
        assert tx.stats()["frames"] == 0
        with pytest.raises(ValueError, match="closed"):
            tx.send(PacketPool.local(1).arrays, np.zeros(1, np.uint32), 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"iface": "a/b"}, "not a valid interface name"),
        ({"iface": "x" * 16}, "at most 15"),
        ({"iface": "veth0", "netns": "../x"}, "not a valid network namespace name"),
        ({"iface": "veth0", "block_size": 3000}, "block_size must be a power of two"),
        ({"iface": "veth0", "frame_size": 100}, "frame_size must be a power of two"),
        ({"iface": "veth0", "block_count": 1}, "greater than or equal to 2"),
        ({"iface": "veth0", "tx_mode": "zerocopy"}, "sendmmsg"),
        ({"iface": "veth0", "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_spec_rejects_bad_fields(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AfPacketSpec.model_validate(fields)
    assert AfPacketSpec.model_validate({"kind": "afpacket", "iface": "veth0"}).tx_mode == "sendmmsg"


def test_fanout_group_keeps_each_flow_on_one_socket(lab: NetLab) -> None:
    a, b = lab.netns(2)
    link = lab.veth(a, b)
    frames = [f for f in multi_flow_frames(flows=40, per_flow=5) if flow_key(f) is not None]
    group = os.getpid() & 0xFFFF
    spec = AfPacketSpec(iface=link.if_b, netns=b, block_timeout_ms=2)
    with AfPacketRx(spec, fanout_group=group) as rx0, AfPacketRx(spec, fanout_group=group) as rx1:
        assert lab.call(a, send_frames, link.if_a, frames) == len(frames)
        got = [drain(rx0, 1.0), drain(rx1, 0.3)]
    assert sorted(got[0] + got[1]) == sorted(frames)  # every frame once, on one of the two sockets
    owner: dict[object, int] = {}
    for i, part in enumerate(got):
        assert part == [f for f in frames if f in set(part)]  # per socket: in the order sent
        for f in part:
            assert owner.setdefault(flow_key(f), i) == i  # a flow reaches one socket only
    assert set(owner.values()) == {0, 1}  # 40 flows: both sockets get some

