"""FlowLoadBalancer: destination rewritten to the flow's jump-hash backend, checksums as scapy computes them."""

from __future__ import annotations

import random
import struct
from collections import Counter
from typing import Any

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

from micronf.dataplane.pool import M_HASH, PacketPool
from micronf.nfs.flow_load_balancer import FlowLoadBalancer
from micronf.packet import flowhash as fh
from micronf.packet.flowhash import jump_hash
from micronf.runtime.descriptor import Access
from micronf.runtime.harness import run_kernel
from micronf.runtime.nf import NFConfigError

BACKENDS = [
    {"ip": "10.9.0.1", "mac": "02:00:00:00:00:0a"},
    {"ip": "10.9.0.2"},
    {"ip": "10.9.0.3", "mac": "02-00-00-00-00-0C"},
]


def ref_jump(key: int, n: int) -> int:
    """Lamping & Veach's reference JumpConsistentHash, in Python integers."""
    b, j = -1, 0
    while j < n:
        b = j
        key = (key * 2862933555777941757 + 1) % 2**64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def ip_int(addr: str) -> int:
    return int.from_bytes(bytes(map(int, addr.split("."))), "big")


def ref_hash(frame: bytes, symmetric: bool = False) -> int:
    """The flow hash as documented: headers' murmur3 on the 5-tuple, ports 0 for fragments and non-TCP/UDP."""
    ip = Ether(frame)[IP]
    sport = dport = 0
    if ip.proto in (6, 17) and ip.frag == 0 and not ip.flags.MF:
        sport, dport = struct.unpack("!HH", bytes(ip.payload)[:4])
    fn = fh.flow_hash_symmetric if symmetric else fh.flow_hash
    return int(fn(ip_int(ip.src), ip_int(ip.dst), ip.proto, sport, dport))


def balanced(frame: bytes, backend: dict[str, str]) -> bytes:
    """``frame`` sent to ``backend``, every checksum recomputed by scapy (a UDP checksum of 0 kept)."""
    pkt = Ether(frame)
    pkt[IP].dst = backend["ip"]
    if "mac" in backend:
        pkt.dst = backend["mac"].replace("-", ":").lower()
    del pkt[IP].chksum
    if TCP in pkt:
        del pkt[TCP].chksum
    if UDP in pkt and pkt[UDP].chksum != 0:
        del pkt[UDP].chksum
    return bytes(pkt)


def random_packet(rng: random.Random) -> Packet:
    def addr() -> str:
        return ".".join(str(rng.randrange(1, 255)) for _ in range(4))

    ip = IP(src=addr(), dst=addr(), ttl=rng.randrange(1, 256), id=rng.randrange(65536))
    if rng.random() < 0.2:
        ip.options = rng.choice([[IPOption_Router_Alert()], [IPOption_RR(routers=["1.2.3.4"] * rng.randint(0, 8))]])
    payload = bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
    kind = rng.random()
    l4: Packet
    if kind < 0.35:
        l4 = TCP(sport=rng.randrange(65536), dport=rng.choice([80, 443]), seq=rng.randrange(2**32), flags="PA",
                 options=rng.choice([[], [("MSS", 1460), ("NOP", None), ("WScale", 7)]])) / payload
    elif kind < 0.65:
        l4 = UDP(sport=rng.randrange(65536), dport=53, chksum=0 if rng.random() < 0.2 else None) / payload
    elif kind < 0.75:
        l4 = ICMP(id=rng.randrange(65536)) / payload
    elif kind < 0.85:  # first fragment: carries the L4 header and its checksum
        ip.flags = "MF"
        l4 = rng.choice([TCP(sport=rng.randrange(65536), dport=80), UDP(sport=rng.randrange(65536))]) / (payload + b"x")
    elif kind < 0.95:  # later fragment: no L4 header
        ip.frag, ip.proto = rng.randrange(1, 8192), rng.choice([6, 17])
        l4 = Raw(payload + b"y" * 8)
    else:
        ip.proto = 47
        l4 = Raw(payload)
    l2 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return (l2 / Dot1Q(vlan=rng.randrange(1, 4095)) if rng.random() < 0.2 else l2) / ip / l4


def test_destination_and_checksums_are_rewritten_like_a_full_recompute() -> None:
    rng = random.Random(11)
    frames = [bytes(random_packet(rng)) for _ in range(250)]
    run = run_kernel(FlowLoadBalancer({"backends": BACKENDS}), frames)
    chosen = [ref_jump(ref_hash(f), len(BACKENDS)) for f in frames]
    assert run.verdicts == ["out"] * len(frames)
    assert run.outputs["out"] == [balanced(f, BACKENDS[b]) for f, b in zip(frames, chosen, strict=True)]
    assert run.counters == {f"backend{b}": n for b, n in sorted(Counter(chosen).items())}
    assert min(Counter(chosen).values()) > 50


def test_a_udp_checksum_that_would_be_zero_is_sent_as_ffff() -> None:
    # Append the 16-bit word that makes the UDP sum, with the backend as destination, come out as 0.
    def udp(dst: str, tail: bytes) -> Packet:
        return Ether() / IP(src="192.0.2.1", dst=dst) / UDP(sport=5000, dport=53) / (b"abcd" + tail)

    word = bytes(udp("10.9.0.2", b"\x00\x00"))[40:42]  # the UDP checksum field as scapy built it
    frame = bytes(udp("198.51.100.7", word))
    expected = balanced(frame, {"ip": "10.9.0.2"})
    assert Ether(expected)[UDP].chksum == 0xFFFF and Ether(frame)[UDP].chksum not in (0, 0xFFFF)
    run = run_kernel(FlowLoadBalancer({"backends": [{"ip": "10.9.0.2"}]}), [frame])
    assert run.outputs["out"] == [expected]


def run_with_hashes(nf: FlowLoadBalancer, frames: list[bytes], preset: list[int]) -> tuple[list[int], list[bytes]]:
    """Run the kernel on frames whose M_HASH metadata is preset; returns (M_HASH after, frames after)."""
    pool = PacketPool.local(len(frames))
    handles = pool.alloc(len(frames))
    for h, frame, value in zip(handles, frames, preset, strict=True):
        pool.write_frame(int(h), frame)
        pool.arrays.words[h, M_HASH] = value
    verdicts = np.empty(len(frames), dtype=np.int32)
    counters = np.zeros(len(nf.counter_names()), dtype=np.int64)
    FlowLoadBalancer.kernel(pool.arrays, handles, len(frames), verdicts, nf.state(), counters)
    assert list(verdicts) == [0] * len(frames)
    return [int(pool.arrays.words[h, M_HASH]) for h in handles], [pool.read_frame(int(h)) for h in handles]


def test_flow_hash_is_stored_in_metadata_and_an_existing_one_is_used() -> None:
    rng = random.Random(5)
    frames = [bytes(random_packet(rng)) for _ in range(40)]
    nf = FlowLoadBalancer({"backends": BACKENDS})
    hashes, _ = run_with_hashes(nf, frames, [0] * len(frames))
    assert hashes == [ref_hash(f) for f in frames]
    preset = [rng.randrange(1, 2**32) for _ in frames]
    hashes, out = run_with_hashes(nf, frames, preset)
    assert hashes == preset
    assert out == [balanced(f, BACKENDS[ref_jump(k, len(BACKENDS))]) for f, k in zip(frames, preset, strict=True)]


def tcp_flows(n: int, seed: int) -> list[bytes]:
    """``n`` distinct TCP flows to one virtual IP, built by patching a scapy template."""
    template = bytearray(bytes(Ether() / IP(src="0.0.0.0", dst="203.0.113.80") / TCP(dport=443) / b"hello"))
    rng = random.Random(seed)
    frames = []
    for src, sport in rng.sample([(s, p) for s in range(1, 2**24, 4099) for p in range(1024, 1024 + 3)], n):
        template[26:30] = (0x0A000000 | src).to_bytes(4, "big")
        template[34:36] = sport.to_bytes(2, "big")
        frames.append(bytes(template))
    return frames


def backends_of(frames: list[bytes], n: int, **config: Any) -> list[int]:
    """Backend index chosen for each frame, read back from the rewritten destination address."""
    ips = [f"10.9.{i // 250}.{i % 250 + 1}" for i in range(n)]
    run = run_kernel(FlowLoadBalancer({"backends": [{"ip": ip} for ip in ips], **config}), frames, batch=256)
    assert run.verdicts == ["out"] * len(frames)
    index = {ip_int(ip): i for i, ip in enumerate(ips)}
    return [index[int.from_bytes(out[30:34], "big")] for out in run.outputs["out"]]


def test_flows_are_sticky_across_batches_and_orders() -> None:
    flows = tcp_flows(300, seed=1)
    first = backends_of(flows, 7)
    rng = random.Random(2)
    order = list(range(len(flows))) * 2
    rng.shuffle(order)
    again = backends_of([flows[i] for i in order], 7)
    assert again == [first[i] for i in order]
    assert first == [ref_jump(ref_hash(f), 7) for f in flows]


def test_adding_a_backend_moves_about_one_flow_in_n_plus_one_and_spreads_evenly() -> None:
    flows = tcp_flows(10_000, seed=3)
    before, after = backends_of(flows, 5), backends_of(flows, 6)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert all(b == 5 for _, b in moved)  # only onto the new backend
    assert abs(len(moved) / len(flows) - 1 / 6) < 0.02
    for n, chosen in ((5, before), (6, after)):
        counts = Counter(chosen)
        assert sorted(counts) == list(range(n))
        assert all(abs(c - len(flows) / n) < 0.1 * len(flows) / n for c in counts.values()), counts


def test_symmetric_hashing_sends_both_directions_to_the_same_backend() -> None:
    rng = random.Random(9)
    fwd, rev = [], []
    for _ in range(200):
        a, b = f"10.0.{rng.randrange(256)}.{rng.randrange(256)}", f"172.16.{rng.randrange(256)}.{rng.randrange(256)}"
        sp, dp = rng.randrange(1024, 65536), rng.choice([80, 443])
        fwd.append(bytes(Ether() / IP(src=a, dst=b) / TCP(sport=sp, dport=dp)))
        rev.append(bytes(Ether() / IP(src=b, dst=a) / TCP(sport=dp, dport=sp)))
    sym_f, sym_r = backends_of(fwd, 8, symmetric=True), backends_of(rev, 8, symmetric=True)
    assert sym_f == sym_r == [ref_jump(ref_hash(f, symmetric=True), 8) for f in fwd]
    assert backends_of(fwd, 8) != backends_of(rev, 8)  # plain hashing is directional


def test_unbalanceable_frames_are_dropped_with_reasons() -> None:
    tcp = bytes(Ether() / IP() / TCP() / b"data")
    udp = bytes(Ether() / Dot1Q() / IP() / UDP())
    first_frag = bytes(Ether() / IP(flags="MF") / TCP() / (b"x" * 8))
    frames = {
        "not_ipv4": [bytes(Ether() / ARP()), bytes(Ether() / IPv6() / TCP()),
                     bytes(Ether() / Dot1Q() / Dot1Q() / IP())],
        "bad_header": [b"", tcp[:13], tcp[:33], tcp[:14] + b"\x44" + tcp[15:], tcp[:14] + b"\x65" + tcp[15:],
                       bytes(Ether() / IP(options=[IPOption_RR(routers=["1.1.1.1"] * 3)]))[:40]],
        "truncated": [tcp[: 14 + 20 + 17], udp[: 18 + 20 + 7], first_frag[: 14 + 20 + 12]],
    }
    # Cut right after the L4 checksum, or ICMP (no pseudo-header checksum to keep) cut anywhere: balanced.
    ok = [tcp[: 14 + 20 + 18], udp[: 18 + 20 + 8], bytes(Ether() / IP() / ICMP())[:36]]
    nf = FlowLoadBalancer({"backends": BACKENDS})
    run = run_kernel(nf, [f for group in frames.values() for f in group] + ok)
    assert run.drops == frames
    assert len(run.outputs["out"]) == len(ok)
    assert sum(run.counters.values()) == len(ok)


def test_jump_hash_matches_the_reference() -> None:
    # Published vectors (ClickHouse's jumpConsistentHash tests), then random keys against ref_jump.
    vectors = [(1, 1, 0), (42, 57, 43), (256, 1024, 520), (3735883980, 1, 0), (3735883980, 666, 361),
               (16045690984833335023, 255, 237)]
    for key, n, bucket in vectors:
        assert ref_jump(key, n) == bucket
        assert jump_hash(np.uint64(key), n) == bucket
    rng = random.Random(4)
    for _ in range(300):
        key, n = rng.randrange(2**64), rng.randint(1, 5000)
        assert jump_hash(np.uint64(key), n) == ref_jump(key, n)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, r"backends: Field required"),
        ({"backends": []}, r"backends: .*at least 1"),
        ({"backends": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.300"}]}, r"backends\[1\]\.ip: .*'10\.0\.0\.300'"),
        ({"backends": [{"ip": "10.0.0.1", "mac": "02:00:00:00:00"}]}, r"backends\[0\]\.mac: .*'02:00:00:00:00'"),
        ({"backends": [{"ip": "10.0.0.1", "mac": "02:00-00:00:00:00"}]}, r"backends\[0\]\.mac: .*six hex octets"),
        ({"backends": [{"ip": "10.0.0.1", "port": 80}]}, r"backends\[0\]\.port: Extra inputs are not permitted"),
    ],
)
def test_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(NFConfigError, match=message):
        FlowLoadBalancer(config)


def test_descriptor_and_counters() -> None:
    d = FlowLoadBalancer.descriptor
    assert (d.stateful, d.l2, d.l3, d.l4, d.payload, d.may_drop) == (
        False, Access.WRITE, Access.WRITE, Access.WRITE, Access.NOP, True)
    assert FlowLoadBalancer({"backends": BACKENDS}).counter_names() == ("backend0", "backend1", "backend2")
