"""PacketSizeCounter: one bin per frame, bins as a Python reference computes them; frames untouched."""

from __future__ import annotations

import bisect
import random
from collections import Counter

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from micronf.nfs.packet_size_counter import PacketSizeCounter
from micronf.runtime.harness import run_kernel
from micronf.runtime.nf import DOC_SECTIONS, NFConfigError

DEFAULT_BOUNDS = [64, 128, 256, 512, 1024, 1518]


LONGEST = bytes(Ether() / IP() / UDP() / Raw(b"\xab" * (1800 - 42)))


def frame_of(size: int) -> bytes:
    """A UDP frame cut to exactly ``size`` bytes (the µNF looks at the length only)."""
    assert size <= len(LONGEST)
    return LONGEST[:size]


def reference(sizes: list[int], bounds: list[int]) -> dict[str, int]:
    names = [f"le_{b}" for b in bounds] + [f"gt_{bounds[-1]}"]
    got = Counter(names[bisect.bisect_left(bounds, s)] for s in sizes)
    return {name: got[name] for name in names}


def test_bin_edges_with_default_bounds() -> None:
    sizes = [0, 1, 60, 64, 65, 128, 129, 256, 257, 512, 1024, 1025, 1514, 1518, 1519, 1800]
    run = run_kernel(PacketSizeCounter(), [frame_of(s) for s in sizes])
    assert run.counters == {"le_64": 4, "le_128": 2, "le_256": 2, "le_512": 2, "le_1024": 1, "le_1518": 3,
                            "gt_1518": 2}
    assert run.counters == reference(sizes, DEFAULT_BOUNDS)
    assert run.outputs["out"] == [frame_of(s) for s in sizes]


@pytest.mark.parametrize("bounds", [[100], [59, 60, 61], [200, 1000, 1500, 1799]])
def test_random_sizes_over_many_batches(bounds: list[int]) -> None:
    rng = random.Random(7)
    sizes = [rng.randrange(0, 1801) for _ in range(300)]
    run = run_kernel(PacketSizeCounter({"bounds": bounds}), [frame_of(s) for s in sizes], batch=32)
    assert run.verdicts == ["out"] * len(sizes)
    assert run.counters == reference(sizes, bounds)


def test_counter_names() -> None:
    assert PacketSizeCounter().counter_names() == ("le_64", "le_128", "le_256", "le_512", "le_1024", "le_1518",
                                                   "gt_1518")
    assert PacketSizeCounter({"bounds": [9000]}).counter_names() == ("le_9000", "gt_9000")


@pytest.mark.parametrize(
    ("bounds", "problem"),
    [([], "at least 1"), ([64, 64], "strictly increasing"), ([128, 64], "strictly increasing"),
     ([0, 64], "greater than or equal to 1"), ([70000], "less than or equal to 65535"), (["big"], "valid integer")],
)
def test_bad_bounds_are_rejected(bounds: list[object], problem: str) -> None:
    with pytest.raises(NFConfigError, match=f"PacketSizeCounter config: bounds.*{problem}"):
        PacketSizeCounter({"bounds": bounds})


def test_descriptor_touches_nothing_and_never_drops() -> None:
    d = PacketSizeCounter.descriptor
    assert all(d.access(r).value == "NOP" for r in ("l2", "l3", "l4", "payload")) and not d.may_drop
    assert all(PacketSizeCounter.doc_sections()[s] for s in DOC_SECTIONS)
