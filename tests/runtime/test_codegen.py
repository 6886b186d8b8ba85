"""The generated hot loop borrows its arrays once per call, before the loop (no NRT refcounts per batch);
each µNF's state is an argument of its own, outside the stage that ``route_batch`` takes."""

from __future__ import annotations

from micronf.nfs.check_ip_header import CheckIPHeader
from micronf.nfs.http_classifier import HttpClassifier
from micronf.nfs.mac_swapper import MacSwapper
from micronf.runtime.codegen import loop_source


def _body(source: str) -> list[str]:
    """The statements of ``hot``, stripped, comments left out."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def hot("))
    return [s for line in lines[start + 1 :] if (s := line.strip()) and not s.startswith("#")]


def test_a_fused_loop_borrows_the_pool_the_rings_every_stage_and_state_before_looping() -> None:
    body = _body(loop_source([CheckIPHeader, MacSwapper, HttpClassifier]))
    loop = body.index("for it in range(max_iters):")
    borrows = [s for s in body[:loop] if "borrowed(" in s]
    names = ("p", "rctrl", "rslots", "ctl", "s0", "s1", "s2", "t0", "t1", "t2")
    assert borrows == [f"{a} = borrowed({a})" for a in names]
    assert not any("borrowed(" in s for s in body[loop:])  # once per call, not per batch


def test_a_single_loop_borrows_its_one_stage() -> None:
    body = _body(loop_source([MacSwapper]))
    assert [s for s in body if "borrowed(" in s][-2:] == ["s0 = borrowed(s0)", "t0 = borrowed(t0)"]
    assert "s1 = borrowed(s1)" not in body
    assert "_K0(p, s0.handles, n0, s0.verdicts, t0, s0.nfc)" in body
