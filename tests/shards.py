"""Multi-flow traffic built with scapy and the flow shard of each frame computed independently of
micronf (textbook murmur3 of the 5-tuple, the paper's jump hash in plain Python), for the flow
sharding tests of the inputs and of the replicas."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from tests.packet.test_headers import ref_flow_hash

SRC_MAC, DST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


def ref_jump_hash(key: int, n: int) -> int:
    """Lamping & Veach's jump consistent hash, as published (64-bit LCG, double division)."""
    b, j = -1, 0
    key &= (1 << 64) - 1
    while j < n:
        b = j
        key = (key * 2862933555777941757 + 1) & ((1 << 64) - 1)
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def ref_frame_hash(frame: bytes) -> int:
    """The flow hash of a frame: murmur3 of its IPv4 5-tuple (ports 0 for fragments and for
    protocols without ports), 0 when it is not IPv4."""
    pkt = Ether(frame)
    if IP not in pkt:
        return 0
    ip = pkt[IP]
    fragment = ip.frag != 0 or bool(ip.flags & 1)
    sport = dport = 0
    if not fragment and (TCP in pkt or UDP in pkt):
        l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
        sport, dport = int(l4.sport), int(l4.dport)
    src = int.from_bytes(bytes(map(int, ip.src.split("."))), "big")
    dst = int.from_bytes(bytes(map(int, ip.dst.split("."))), "big")
    return ref_flow_hash(src, dst, int(ip.proto), sport, dport)


def ref_shard(frame: bytes, n: int) -> int:
    return ref_jump_hash(ref_frame_hash(frame), n)


def flow_key(frame: bytes) -> tuple[str, str, int, int, int] | None:
    """The 5-tuple of a frame (None when not IPv4), as scapy decodes it."""
    pkt = Ether(frame)
    if IP not in pkt:
        return None
    ip = pkt[IP]
    l4 = pkt.getlayer(TCP) if TCP in pkt else pkt.getlayer(UDP)
    return ip.src, ip.dst, int(ip.proto), int(l4.sport) if l4 else 0, int(l4.dport) if l4 else 0


def multi_flow_frames(flows: int = 48, per_flow: int = 6, size: int = 80) -> list[bytes]:
    """``flows`` UDP and TCP flows interleaved round-robin, ``per_flow`` frames each of ``size``
    bytes (payload tells flow and sequence), TTLs 2..64, then the three fragments of one UDP
    datagram and an ARP frame (not IPv4)."""
    frames: list[bytes] = []
    for seq in range(per_flow):
        for f in range(flows):
            l4: Packet = (UDP(sport=1000 + f, dport=53 + f % 7) if f % 3 else
                          TCP(sport=2000 + f, dport=80, flags="PA", seq=seq))
            head = (Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=f"10.1.{f % 5}.{1 + f}", dst="192.168.7.9",
                                                         ttl=2 + (f * 7 + seq) % 63) / l4)
            tag = f"f{f}s{seq}".encode()
            frames.append(bytes(head / Raw(tag + b"." * max(size - len(head) - len(tag), 0))))
    datagram = IP(src="10.9.9.9", dst="192.168.7.9", ttl=9, id=77) / UDP(sport=4444, dport=5555) / Raw(b"z" * 100)
    frames += [bytes(Ether(src=SRC_MAC, dst=DST_MAC) / piece) for piece in fragment(datagram, fragsize=40)]
    frames.append(bytes(Ether(src=SRC_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.1.0.1", pdst="10.1.0.2")))
    return frames
