"""The in-memory traces ``bench/chain.py`` feeds its graphs: 64-byte UDP/IPv4 frames over many
flows, and 200-byte HTTP GETs of which a fraction carry SQL injections (built with scapy)."""

from __future__ import annotations

from micronf.io.trace import Trace


def _pad(frame: bytes, size: int) -> bytes:
    return frame + bytes(max(0, size - len(frame)))


def udp_trace(n_flows: int = 1024, size: int = 64) -> Trace:
    """``n_flows`` 64-byte UDP/IPv4 frames (distinct 5-tuples, TTL 64, valid checksums);
    sizes exclude the FCS like a pcap: 60 bytes on the wire + 4 FCS = the 64-byte frame."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    frames = []
    for i in range(n_flows):
        pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
               / IP(src=f"10.0.{(i >> 8) & 0xFF}.{i & 0xFF}", dst=f"192.168.{i % 4}.10", ttl=64)
               / UDP(sport=1024 + i, dport=1000 + i % 1000))
        frames.append(_pad(bytes(pkt), size - 4))
    return Trace.from_frames(frames)


SQLI_URLS = (
    "/login.php?user=admin'--",
    "/item.php?id=1%20OR%201=1",
    "/search?q=x'%20UNION%20SELECT%20password%20FROM%20users",
    "/news?id=5;%20DROP%20TABLE%20users;%20",
    "/page?id=1%27",
)
CLEAN_URLS = (
    "/index.html",
    "/api/v1/orders?page=2",
    "/static/css/site.css",
    "/images/logo.png",
    "/login.php",
    "/products/42/reviews",
    "/search?q=network+functions",
    "/api/v1/users/17",
)
COUNT_URLS = ["/api/v1/", "/login.php", "/index.html"]


def http_trace(n: int = 1000, size: int = 200, sqli_fraction: float = 0.2) -> Trace:
    """``n`` 200-byte TCP/IPv4 segments each starting with an HTTP GET request line; every
    1/``sqli_fraction``-th URL carries an SQL injection."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    every = max(1, round(1 / sqli_fraction)) if sqli_fraction > 0 else 0
    frames = []
    for i in range(n):
        bad = every > 0 and i % every == 0
        url = SQLI_URLS[i % len(SQLI_URLS)] if bad else CLEAN_URLS[i % len(CLEAN_URLS)]
        head = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                / IP(src=f"10.1.{(i >> 8) & 0xFF}.{i & 0xFF}", dst="192.168.0.80", ttl=64)
                / TCP(sport=20000 + i, dport=80, flags="PA", seq=1000 + i))
        room = size - 4 - len(bytes(head))
        payload = f"GET {url} HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
        payload = (payload + "X" * room)[:room] if len(payload) < room else payload
        frames.append(bytes(head / Raw(payload.encode())))
    return Trace.from_frames(frames)


# -- machine ---------------------------------------------------------------------------------
