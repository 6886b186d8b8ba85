"""kill -9 of a µNF between counting a batch's drops and freeing their buffers (issue 11, the soak's
over-count): the supervisor's reclaim frees those buffers but must not count them again as
``lost_in_crash``, so ``in == out + dropped[reason] + lost_in_crash`` stays exact."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from micronf.agent.core import Agent
from micronf.api.models import DeployRequest
from micronf.dataplane.ring import HEAD
from micronf.io.generator_spec import GeneratorSpec
from micronf.runtime.loop import RC_BAD_VERDICT, RC_FULL, RC_UNCONNECTED, RC_VERDICT0, RC_YIELDS
from micronf.runtime.stage import GraphMemory
from tests.agent.crashcount import wait_drained
from tests.procs import stopped

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

BAD = "10.0.0.1"  # of the generator's 10.0.0.0/30 sources: CheckIPHeader drops it as bad_src


def _request(name: str, spec: GeneratorSpec) -> DeployRequest:
    # on_full "wait": a µNF whose next ring is full holds its batch, drops already counted, until
    # there is room, which gives the test a deterministic place to kill it
    return DeployRequest.model_validate({
        "name": name,
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader", "config": {"bad_src": [BAD]}},
                            {"name": "swap", "type": "MacSwapper"}],
                  "edges": [{"src": "chk", "label": "out", "dst": "swap"}], "entry": "chk"},
        "rx": spec.model_dump(mode="json"), "ring_capacity": 1024, "pool_slots": 16384, "on_full": "wait",
        "outputs": {"out": {"backend": {"kind": "null"}}}, "autoscale": {"enabled": False}})


def _counted_unfreed(mem: GraphMemory, k: int) -> int:
    """What process ``k`` counted as freed (drop verdicts, unconnected, full, bad verdicts) minus what its
    return ring took, read here from the raw counters (first incarnation: no offset)."""
    total = 0
    for i in mem.layout.processes[k].nodes:
        node = mem.layout.nodes[i]
        rc = mem.runtime_counters(node)
        first = RC_VERDICT0 + len(node.labels)
        total += int(rc[first:first + len(node.drop_reasons)].sum())
        total += int(rc[RC_UNCONNECTED] + rc[RC_FULL] + rc[RC_BAD_VERDICT])
    return total - int(mem.pool.arrays.ret_ctrl[mem.layout.processes[k].client, HEAD])


def _kill_between_count_and_free(mem: GraphMemory, k: int, pid: int, downstream: int) -> tuple[int, int]:
    """Stop the downstream µNF so process ``k`` (pid ``pid``) fills the ring to it and waits for room
    holding a batch whose drops it has counted but not freed; SIGKILL it there. Returns how many
    buffers it had counted and still held, and the number of tries (a batch without a drop: retry)."""
    rc = mem.runtime_counters(mem.layout.nodes[mem.layout.processes[k].nodes[0]])
    for tries in range(1, 21):
        os.kill(downstream, signal.SIGSTOP)
        yields = int(rc[RC_YIELDS])
        deadline = time.monotonic() + 10
        while int(rc[RC_YIELDS]) < yields + 100:  # waiting for room, batch in hand
            assert time.monotonic() < deadline, "the µNF never waited for the stopped one"
            time.sleep(0.001)
        os.kill(pid, signal.SIGSTOP)
        while not stopped(pid):
            time.sleep(0.0001)
        held = _counted_unfreed(mem, k)
        if held > 0:
            os.kill(pid, signal.SIGKILL)
            os.kill(downstream, signal.SIGCONT)
            return held, tries
        os.kill(pid, signal.SIGCONT)
        os.kill(downstream, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail("20 batches in a row without a counted drop")


def test_kill_9_of_a_unf_holding_counted_drops_counts_them_once(tmp_path: Path) -> None:
    total = 2_000_000
    spec = GeneratorSpec(count=total, templates=64, flows=16, src_net="10.0.0.0/30")
    with Agent(data_dir=tmp_path) as agent:
        info = agent.deploy(_request("crash-count", spec))
        mem = GraphMemory.attach(info.segment)
        try:
            k = next(p.index for p in info.processes if p.nodes == ["chk"])
            deadline = time.monotonic() + 30
            while agent.stats("crash-count").rx["frames"] < total // 10:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            procs = agent.deployment("crash-count").processes
            pid = next(p.pid for p in procs if p.nodes == ["chk"])
            downstream = next(p.pid for p in procs if p.nodes == ["swap"])
            held, tries = _kill_between_count_and_free(mem, k, pid, downstream)
            deadline = time.monotonic() + 10
            while not agent.stats("crash-count").restarts:
                assert time.monotonic() < deadline, "the µNF was not restarted"
                time.sleep(0.01)
            s = wait_drained(agent, "crash-count")
        finally:
            mem.seg.close()
        agent.remove("crash-count")
    lost = s.drops.get("chk.lost_in_crash", 0)
    dropped = sum(s.drops.values()) - lost
    print(f"\n{total} in, {s.tx['out']['frames']} out, {dropped} dropped, {lost} lost_in_crash; "
          f"held {held} counted drops at the kill (try {tries}), reclaimed {s.restarts[0].reclaimed_buffers}")
    assert s.rx["frames"] == total and s.drops.get("chk.bad_src", 0) > 0
    assert total == s.tx["out"]["frames"] + dropped + lost
