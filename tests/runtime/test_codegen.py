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


def test_each_fused_stage_but_the_last_may_hand_its_batch_on_whole() -> None:
    """A stage whose batch all goes to the next fused µNF passes its handles array on (no routing, no
    copy); otherwise it routes (a call) into the next stage's own array. The last stage always
    routes, with ``route_batch`` inlined."""
    body = _body(loop_source([CheckIPHeader, MacSwapper, HttpClassifier]))
    for j, ingress in ((0, "ip"), (1, "0")):
        at = next(i for i, s in enumerate(body) if s.startswith(f"if pass_local(s{j}, n{j}, {ingress}):"))
        assert body[at + 1 : at + 6] == [
            f"n{j + 1} = n{j}", f"h{j + 1} = h{j}", "else:",
            f"n{j + 1} = route_batch_call(p, rctrl, rslots, s{j}, h{j}, n{j}, {ingress}, s{j + 1}.handles, client, "
            "ctl, stop_word)", f"h{j + 1} = s{j + 1}.handles"]
        assert f"_K{j + 1}(p, h{j + 1}, n{j + 1}, s{j + 1}.verdicts, t{j + 1}, s{j + 1}.nfc)" in body
    assert not any("pass_local(s2" in s for s in body)
    assert "n3 = route_batch(p, rctrl, rslots, s2, h2, n2, 0, s2.freebuf, client, ctl, stop_word)" in body
    assert sum("cycles()" in s for s in body if "t_start" not in s and "max_cycles" not in s) == 1 + 3  # per stage
