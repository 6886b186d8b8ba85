"""L3L4Filter: first-match allow/deny against an independent ``ipaddress`` model of the same rules."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from micronf.nfs.l3l4_filter import L3L4Filter
from micronf.runtime.descriptor import Access
from micronf.runtime.harness import run_kernel
from micronf.runtime.nf import NFConfigError

PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1}


@dataclass(frozen=True)
class Pkt:
    """What the generator put in a packet; ports None when no TCP/UDP ports are visible."""

    src: str
    dst: str
    proto: int
    ports: tuple[int, int] | None
    frame: bytes


def ref_port(spec: Any, port: int) -> bool:
    lo, _, hi = str(spec).partition("-")
    return int(lo) <= port <= int(hi or lo)


def ref_matches(rule: dict[str, Any], pkt: Pkt) -> bool:
    """The rule semantics as documented, written with ``ipaddress``."""
    for field, addr in (("src", pkt.src), ("dst", pkt.dst)):
        net = rule.get(field, "any")
        if net != "any" and ipaddress.IPv4Address(addr) not in ipaddress.IPv4Network(net):
            return False
    proto = rule.get("proto", "any")
    if proto != "any" and (PROTO_NUMBERS[proto] if proto in PROTO_NUMBERS else int(proto)) != pkt.proto:
        return False
    sport, dport = rule.get("sport", "any"), rule.get("dport", "any")
    if sport == dport == "any":
        return True
    if pkt.ports is None:
        return False
    return (sport == "any" or ref_port(sport, pkt.ports[0])) and (dport == "any" or ref_port(dport, pkt.ports[1]))


def ref_filter(config: dict[str, Any], pkt: Pkt) -> tuple[str, str]:
    """(verdict, counter hit) for an IPv4 packet."""
    for i, rule in enumerate(config.get("rules", [])):
        if ref_matches(rule, pkt):
            return ("out" if rule["action"] == "allow" else "drop:denied", f"rule{i}")
    return ("out" if config.get("default", "deny") == "allow" else "drop:denied", "default")


PREFIXES = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3", "192.168.0.0/16", "192.168.1.128/25",
            "0.0.0.0/0", "172.16.0.0/12", "10.1.2.3/32"]
HOSTS = ["10.1.2.3", "10.1.2.4", "10.1.9.9", "10.200.0.1", "192.168.1.200", "192.168.1.5", "172.31.255.255",
         "172.15.0.1", "8.8.8.8", "255.255.255.255", "0.0.0.0"]
PORT_SPECS = ["any", "80", 443, "1000-2000", "0-1023", "53", "1024-65535", "2000-2000"]
PORTS = [80, 443, 53, 999, 1000, 1500, 2000, 2001, 0, 65535, 1023, 1024]


def random_rule(rng: random.Random) -> dict[str, Any]:
    """A rule with one to three constraints, so that rules overlap without matching everything."""
    proto = rng.choice(["any", "tcp", "udp", "icmp", 47, 6, "17", "tcp", "udp"])
    choices: dict[str, list[Any]] = {"src": PREFIXES, "dst": PREFIXES, "proto": [proto]}
    if proto in ("any", "tcp", "udp", 6, "17"):
        choices |= {"sport": PORT_SPECS, "dport": PORT_SPECS}
    rule: dict[str, Any] = {"action": rng.choice(["allow", "deny"])}
    for field in rng.sample(sorted(choices), rng.randint(1, 3)):
        rule[field] = rng.choice(choices[field])
    return rule


def random_packet(rng: random.Random) -> Pkt:
    src = rng.choice([*HOSTS, f"10.1.2.{rng.randrange(256)}", f"{rng.randrange(256)}.{rng.randrange(256)}.0.1"])
    dst = rng.choice([*HOSTS, f"192.168.{rng.randrange(256)}.{rng.randrange(256)}"])
    proto = rng.choice([6, 6, 17, 17, 1, 47])
    sport, dport = rng.choice([*PORTS, rng.randrange(65536)]), rng.choice([*PORTS, rng.randrange(65536)])
    kind = rng.random()
    frag = rng.randrange(1, 8192) if kind < 0.1 else 0  # a non-first fragment: no L4 header
    ip = IP(src=src, dst=dst, proto=proto, frag=frag, flags="MF" if 0.1 <= kind < 0.2 else "")
    if rng.random() < 0.2:
        ip.options = [IPOption_RR(routers=["1.1.1.1"])]
    if frag or proto not in (6, 17):
        l4: Any = ICMP() if proto == 1 and not frag else Raw(b"\x00" * 12)
        ports = None
    else:
        l4 = TCP(sport=sport, dport=dport) if proto == 6 else UDP(sport=sport, dport=dport)
        ports = (sport, dport)
    l2 = Ether() / Dot1Q(vlan=5) if rng.random() < 0.2 else Ether()
    frame = bytes(l2 / ip / l4 / b"payload")
    if ports is not None and rng.random() < 0.05:  # L4 cut off before the destination port
        frame = frame[: len(frame) - len(l4 / b"payload") + 3]
        ports = None
    return Pkt(src, dst, proto, ports, frame)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_rules_and_packets_agree_with_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    config: dict[str, Any] = {"rules": [random_rule(rng) for _ in range(rng.randint(6, 16))],
                              "default": rng.choice(["allow", "deny"])}
    pkts = [random_packet(rng) for _ in range(120)]
    run = run_kernel(L3L4Filter(config), [p.frame for p in pkts])
    expected = [ref_filter(config, p) for p in pkts]
    assert len({hit for _, hit in expected}) >= 5  # the draw exercises several rules, not just the default
    assert run.verdicts == [v for v, _ in expected]
    assert run.outputs["out"] == [p.frame for p, (v, _) in zip(pkts, expected, strict=True) if v == "out"]
    names = [f"rule{i}" for i in range(len(config["rules"]))] + ["default"]
    assert run.counters == {name: sum(1 for _, hit in expected if hit == name) for name in names}


def test_first_match_wins_and_ports_ranges_are_inclusive() -> None:
    config = {"rules": [
        {"action": "deny", "src": "10.1.2.3", "proto": "tcp", "dport": "1000-2000"},
        {"action": "allow", "src": "10.0.0.0/8"},
        {"action": "deny", "proto": "any", "sport": 53},
    ], "default": "allow"}
    frames = [bytes(Ether() / IP(src=s, dst="1.1.1.1") / l4) for s, l4 in [
        ("10.1.2.3", TCP(dport=1000)), ("10.1.2.3", TCP(dport=2000)), ("10.1.2.3", TCP(dport=2001)),
        ("10.1.2.3", UDP(dport=1500)), ("11.0.0.1", UDP(sport=53)), ("11.0.0.1", TCP(sport=53)),
        ("11.0.0.1", UDP(sport=54)), ("11.0.0.1", ICMP()),
    ]]
    run = run_kernel(L3L4Filter(config), frames)
    assert run.verdicts == ["drop:denied", "drop:denied", "out", "out", "drop:denied", "drop:denied", "out", "out"]
    assert run.counters == {"rule0": 2, "rule1": 2, "rule2": 2, "default": 2}


def test_port_rules_never_match_non_first_fragments_but_address_rules_do() -> None:
    first = bytes(Ether() / IP(src="10.0.0.1", flags="MF") / TCP(dport=22) / (b"x" * 16))
    later = bytes(Ether() / IP(src="10.0.0.1", proto=6, frag=3) / Raw(b"\x00\x16\x00\x16" * 4))  # bytes like ports 22
    config = {"rules": [{"action": "deny", "proto": "tcp", "dport": 22}], "default": "allow"}
    assert run_kernel(L3L4Filter(config), [first, later]).verdicts == ["drop:denied", "out"]
    config = {"rules": [{"action": "deny", "src": "10.0.0.0/24", "proto": 6}], "default": "allow"}
    assert run_kernel(L3L4Filter(config), [first, later]).verdicts == ["drop:denied", "drop:denied"]


def test_non_ip_policy_and_malformed_headers() -> None:
    non_ip = [bytes(Ether() / ARP()), bytes(Ether() / IPv6() / UDP()), bytes(Ether() / Dot1Q() / Dot1Q() / IP())]
    ok = bytes(Ether() / IP() / UDP())
    malformed = [b"", ok[:13], ok[:30], ok[:14] + b"\x65" + ok[15:], ok[:14] + b"\x43" + ok[15:],
                 bytes(Ether() / IP(options=[IPOption_RR(routers=["1.1.1.1"] * 5)]))[:44]]
    frames = [*non_ip, *malformed, ok]
    allow_all = {"rules": [{"action": "allow"}]}
    run = run_kernel(L3L4Filter(allow_all), frames)  # non_ip defaults to deny
    assert run.verdicts == ["drop:non_ip"] * 3 + ["drop:malformed"] * len(malformed) + ["out"]
    assert run.counters == {"rule0": 1, "default": 0}
    run = run_kernel(L3L4Filter({**allow_all, "non_ip": "allow"}), frames)
    assert run.verdicts == ["out"] * 3 + ["drop:malformed"] * len(malformed) + ["out"]
    assert run.outputs["out"] == [*non_ip, ok]


def test_no_rules_default_deny() -> None:
    run = run_kernel(L3L4Filter(), [bytes(Ether() / IP() / TCP())] * 40)
    assert run.verdicts == ["drop:denied"] * 40
    assert run.counters == {"default": 40}  # accumulated over two batches


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"action": "allow"}, {"action": "deny", "src": "10.0.0.0/33"}], r"rules\[1\]\.src: .*'10\.0\.0\.0/33'"),
        ([{"action": "deny", "dst": "10.1.2.3/8"}], r"rules\[0\]\.dst: .*host bits set: did you mean '10\.0\.0\.0/8'"),
        ([{"action": "deny", "dst": "example.com"}], r"rules\[0\]\.dst: .*'example\.com'"),
        ([{"action": "deny", "proto": "sctp"}], r"rules\[0\]\.proto: .*'sctp'"),
        ([{"action": "deny", "proto": 256}], r"rules\[0\]\.proto: .*256"),
        ([{"action": "deny", "dport": "2000-1000"}], r"rules\[0\]\.dport: .*'2000-1000'.*lowest first"),
        ([{"action": "deny", "sport": 70000}], r"rules\[0\]\.sport: .*70000"),
        ([{"action": "deny", "sport": "http"}], r"rules\[0\]\.sport: .*'http'"),
        ([{"action": "deny", "proto": "icmp", "dport": 80}], r"rules\[0\]: .*ports only exist for tcp and udp"),
        ([{"action": "reject"}], r"rules\[0\]\.action"),
        ([{"action": "deny", "port": 80}], r"rules\[0\]\.port: Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_rule_and_value(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(NFConfigError, match=message):
        L3L4Filter({"rules": rules})


def test_config_is_normalised_and_counters_named() -> None:
    nf = L3L4Filter({"rules": [{"action": "allow", "src": " 10.0.0.0/8 ", "proto": "6", "dport": 80},
                               {"action": "deny", "proto": 17, "sport": " 1-2 "}], "non_ip": "allow"})
    r0, r1 = nf.config.rules
    assert (r0.src, r0.proto, r0.dport, r1.proto, r1.sport) == ("10.0.0.0/8", "tcp", "80", "udp", "1-2")
    assert nf.counter_names() == ("rule0", "rule1", "default")


def test_descriptor() -> None:
    d = L3L4Filter.descriptor
    assert (d.stateful, d.l2, d.l3, d.l4, d.payload, d.may_drop) == (
        False, Access.NOP, Access.READ, Access.READ, Access.NOP, True)
    assert L3L4Filter.verdict_names() == ("out", "drop:denied", "drop:non_ip", "drop:malformed")
