"""kill -9 of the Tx service between counting a batch and freeing its buffers (issue 11): the
supervisor's reclaim frees those buffers but must not count them again as ``lost_in_crash``, so
``in == out + dropped[reason] + lost_in_crash`` stays exact.

The Tx service counts and frees in two back-to-back compiled calls, a window of nanoseconds no
signal can aim at. So the test makes that state itself with the service's own code: it stops the
service (SIGSTOP), takes a batch from the exit ring as the service does, counts it with the
service's counting kernel (:func:`tx_count`) without freeing it, and SIGKILLs the stopped service
— for the supervisor exactly a Tx service killed between counting and freeing a batch."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from micronf.agent.core import Agent
from micronf.api.models import DeployRequest
from micronf.dataplane.ring import ring_dequeue
from micronf.io.generator_spec import GeneratorSpec
from micronf.runtime.stage import GraphMemory
from micronf.services.iomem import TX_INDEX, TX_WORDS
from micronf.services.tx import tx_count
from tests.agent.crashcount import wait_drained
from tests.procs import stopped

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TOTAL = 1_000_000
BATCH = 100


def _request(name: str) -> DeployRequest:
    spec = GeneratorSpec(count=TOTAL, templates=64, flows=16, src_net="10.0.0.0/30")
    return DeployRequest.model_validate({
        "name": name,
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader", "config": {"bad_src": ["10.0.0.1"]}},
                            {"name": "swap", "type": "MacSwapper"}],
                  "edges": [{"src": "chk", "label": "out", "dst": "swap"}], "entry": "chk"},
        "rx": spec.model_dump(mode="json"), "ring_capacity": 1024, "pool_slots": 16384,
        "outputs": {"out": {"backend": {"kind": "null"}}}, "autoscale": {"enabled": False}})


def _count_without_freeing(mem: GraphMemory) -> int:
    """Do what the stopped Tx service would: take a batch from the exit ring and count it as sent
    (its counting kernel, its stats row) — and then die before freeing it. Returns the batch size."""
    ring = mem.layout.exits[0].ring
    held = np.empty(BATCH, dtype=np.uint32)
    deadline = time.monotonic() + 10
    while len(mem.rings[ring]) < BATCH:  # the µNFs keep filling it while the service is stopped
        assert time.monotonic() < deadline, "the exit ring did not fill"
        time.sleep(0.001)
    n = int(ring_dequeue(mem.rings.ctrl[ring], mem.rings.slots[ring], held, BATCH))
    stats = mem.seg.view("tx.stats", np.int64).reshape(-1, TX_WORDS)[0]
    tx_count(mem.pool.arrays, held, n, n, stats, False, mem.seg.view("tx.hist", np.int64), 1.0,
             np.empty(BATCH, dtype=np.int64))
    return n


def test_kill_9_of_the_tx_service_holding_a_counted_batch_counts_it_once(tmp_path: Path) -> None:
    with Agent(data_dir=tmp_path) as agent:
        info = agent.deploy(_request("tx-crash"))
        mem = GraphMemory.attach(info.segment)
        try:
            deadline = time.monotonic() + 30
            while agent.stats("tx-crash").rx["frames"] < TOTAL // 10:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            pid = next(p.pid for p in agent.deployment("tx-crash").processes if p.nodes == ["@tx"])
            os.kill(pid, signal.SIGSTOP)
            while not stopped(pid):
                time.sleep(0.0001)
            counted = _count_without_freeing(mem)
            sent_at_kill = int(mem.seg.view("tx.stats", np.int64).reshape(-1, TX_WORDS)[0, TX_INDEX["frames"]])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while not agent.stats("tx-crash").restarts:
                assert time.monotonic() < deadline, "the Tx service was not restarted"
                time.sleep(0.01)
            s = wait_drained(agent, "tx-crash")
        finally:
            mem.seg.close()
        agent.remove("tx-crash")
    lost = s.drops.get("@tx.lost_in_crash", 0)
    dropped = sum(s.drops.values()) - lost
    out = s.tx["out"]["frames"]
    print(f"\n{TOTAL} in, {out} out ({sent_at_kill} when killed, {counted} of them counted, not freed), "
          f"{dropped} dropped, {lost} lost_in_crash")
    assert counted == BATCH and s.rx["frames"] == TOTAL and s.drops.get("chk.bad_src", 0) > 0
    assert s.restarts[0].nodes == ["@tx"] and s.restarts[0].reclaimed_buffers == lost
    assert out + dropped + lost == TOTAL
