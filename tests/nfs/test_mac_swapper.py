"""MacSwapper: addresses swapped, everything else untouched, runts dropped."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from micronf.nfs.mac_swapper import MacSwapper
from micronf.runtime.harness import run_kernel


def test_swaps_addresses_and_keeps_the_rest() -> None:
    pkts = [Ether(src=f"02:00:00:00:00:{i:02x}", dst="ff:ee:dd:cc:bb:aa") / IP() / UDP(dport=i) for i in range(70)]
    run = run_kernel(MacSwapper(), [bytes(p) for p in pkts])
    assert len(run.outputs["out"]) == 70
    for p, out in zip(pkts, run.outputs["out"], strict=True):
        expected = Ether(dst=p.src, src=p.dst) / p.payload
        assert out == bytes(expected)


def test_runts_are_dropped_with_a_reason() -> None:
    run = run_kernel(MacSwapper(), [b"", b"\x01" * 11, b"\x02" * 12])
    assert run.verdicts == ["drop:runt", "drop:runt", "out"]
    assert run.outputs["out"] == [b"\x02" * 12]
