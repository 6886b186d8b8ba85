"""The one 5-tuple rule syntax and its compiled scan, against a model written with ``ipaddress``."""

from __future__ import annotations

import ipaddress
import random

import numpy as np
import pytest
from pydantic import ValidationError

from micronf.packet.rules import ACTION, NCOLS, FlowRule, first_match, rule_table


def test_canonical_form_and_legacy_spellings_read_alike() -> None:
    """The Rx service's former spellings mean the same rule as the canonical syntax and are stored in it."""
    legacy = FlowRule.model_validate({"src": "10.0.0.1", "dst": None, "proto": 6, "sport": [1000, 2000],
                                      "dport": 80, "action": "drop"})
    canonical = FlowRule.model_validate({"src": "10.0.0.1/32", "proto": "tcp", "sport": "1000-2000",
                                         "dport": "80", "action": "deny"})
    assert legacy == canonical
    assert legacy.model_dump() == {"action": "deny", "src": "10.0.0.1/32", "dst": "any", "proto": "tcp",
                                   "sport": "1000-2000", "dport": "80"}
    assert FlowRule.model_validate({"action": "accept"}).action == "allow"
    assert FlowRule().action == "allow"  # an omitted action allows


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"src": "10.0.0.300/8"}, "an IPv4 address"),
        ({"dst": "10.1.2.3/8"}, "did you mean '10.0.0.0/8'"),
        ({"proto": 256}, "0..255"),
        ({"proto": "sctp"}, "'sctp'"),
        ({"dport": [90, 80]}, "lowest first"),
        ({"dport": "2000-1000"}, "lowest first"),
        ({"sport": 70000}, "65535"),
        ({"sport": "http"}, "'http'"),
        ({"proto": "icmp", "dport": 80}, "ports only exist for tcp and udp"),
        ({"action": "maybe"}, "allow"),
        ({"port": 80}, "port"),
    ],
)
def test_bad_rules_say_what_is_wrong(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FlowRule.model_validate(raw)


def test_exact_rules_name_one_flow() -> None:
    exact = {"src": "10.0.0.1", "dst": "10.0.0.2", "proto": "udp", "sport": 53, "dport": 53}
    assert FlowRule.model_validate(exact).is_exact
    for loosen in ({"src": "10.0.0.0/24"}, {"proto": "any"}, {"dport": "53-54"}, {"sport": "any"}):
        assert not FlowRule.model_validate({**exact, **loosen}).is_exact


def _model(rules: list[FlowRule], src: str, dst: str, proto: int, ports: tuple[int, int] | None) -> int:
    """Index of the first matching rule (len(rules) for none), from the documented semantics."""
    numbers = {"tcp": 6, "udp": 17, "icmp": 1}
    for i, r in enumerate(rules):
        if any(net != "any" and ipaddress.IPv4Address(a) not in ipaddress.IPv4Network(net)
               for net, a in ((r.src, src), (r.dst, dst))):
            continue
        if r.proto != "any" and numbers.get(str(r.proto), r.proto) != proto:
            continue
        if (r.sport, r.dport) != ("any", "any"):
            if ports is None:
                continue
            ok = True
            for spec, port in zip((r.sport, r.dport), ports, strict=True):
                lo, _, hi = spec.partition("-")
                ok = ok and (spec == "any" or int(lo) <= port <= int(hi or lo))
            if not ok:
                continue
        return i
    return len(rules)


def test_first_match_agrees_with_the_model() -> None:
    rng = random.Random(13)
    prefixes = ["any", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "192.168.1.128/25", "0.0.0.0/0"]
    hosts = ["10.1.2.3", "10.1.9.9", "10.200.0.1", "192.168.1.200", "192.168.1.5", "8.8.8.8"]
    port_specs = ["any", 80, "1000-2000", "0-1023", [53, 53], "1024-65535"]
    ports = [80, 53, 999, 1000, 2000, 2001, 0, 65535]
    for _ in range(40):
        rules = []
        for _ in range(rng.randrange(1, 6)):
            proto = rng.choice(["any", "tcp", "udp", "icmp", 47])
            raw: dict[str, object] = {"action": rng.choice(["allow", "deny"]), "proto": proto,
                                      "src": rng.choice(prefixes), "dst": rng.choice(prefixes)}
            if proto in ("any", "tcp", "udp"):
                raw |= {"sport": rng.choice(port_specs), "dport": rng.choice(port_specs)}
            rules.append(FlowRule.model_validate(raw))
        table = rule_table(rules, 7, 9)
        assert table.shape == (len(rules), NCOLS)
        assert [int(v) for v in table[:, ACTION]] == [7 if r.action == "allow" else 9 for r in rules]
        for _ in range(60):
            src, dst = rng.choice(hosts), rng.choice(hosts)
            proto = rng.choice([6, 17, 1, 47])
            visible = (rng.choice(ports), rng.choice(ports)) if proto in (6, 17) and rng.random() < 0.9 else None
            sport, dport = visible if visible is not None else (-1, -1)
            got = first_match(table, int(ipaddress.IPv4Address(src)), int(ipaddress.IPv4Address(dst)), proto,
                              sport, dport)
            assert got == _model(rules, src, dst, proto, visible)


def test_an_empty_rule_list_matches_nothing() -> None:
    table = rule_table([], 0, 1)
    assert table.shape == (0, NCOLS) and table.dtype == np.int64
    assert first_match(table, 1, 2, 6, 80, 80) == 0
