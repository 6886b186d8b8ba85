"""Live conservation under traffic (issue 11 §3): a healthy graph reads ok in every poll, a leak reads false."""

from __future__ import annotations

import time

import numpy as np
import pytest

from micronf.agent.core import Agent
from micronf.agent.deployment import RX_SLOT
from micronf.api.models import DeployRequest
from micronf.dataplane.pool import pool_alloc, pool_free_owner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

POLLS = 250
LEAK = 1_500  # buffers planted: more than the processes may hold between counting and freeing (~600 here)


def _request() -> DeployRequest:
    # two source hosts, one of them dropped by CheckIPHeader: about half of the packets are drops
    return DeployRequest.model_validate({
        "name": "live-cons",
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader", "config": {"bad_src": ["10.0.0.1"]}},
                            {"name": "swap", "type": "MacSwapper"}],
                  "edges": [{"src": "chk", "label": "out", "dst": "swap"}], "entry": "chk"},
        "rx": {"kind": "generator", "rate_pps": 100_000, "flows": 16, "src_net": "10.0.0.0/30"},
        "outputs": {"out": {"backend": {"kind": "null"}}}, "autoscale": {"enabled": False}})


def test_every_poll_under_load_is_ok_and_a_planted_leak_is_not() -> None:
    with Agent() as agent:
        agent.deploy(_request())
        deadline = time.monotonic() + 30
        while agent.stats("live-cons").conservation.tx < 10_000:  # traffic flows
            assert time.monotonic() < deadline, agent.stats("live-cons").conservation
            time.sleep(0.05)
        polls = [agent.stats("live-cons") for _ in range(POLLS)]
        bad = [p.conservation for p in polls if not p.conservation.ok]
        assert not bad, f"{len(bad)} of {POLLS} polls not ok, e.g. {bad[0]}"
        moved = polls[-1].conservation.rx - polls[0].conservation.rx
        assert moved > 1_000 and polls[-1].drops.get("chk.bad_src", 0) > 1_000  # under load, with drops
        assert any(p.conservation.rx != p.conservation.tx + p.conservation.dropped for p in polls)

        # plant a leak: buffers taken from the pool that no counter knows of (the Rx service, the
        # pool's only allocator, is paused meanwhile)
        dep = agent._deployments["live-cons"]
        g = dep.runtime
        rx_line = g.io_line(RX_SLOT)
        p = g.memory().pool.arrays
        leaked = np.empty(LEAK, dtype=np.uint32)
        assert not g.pause([rx_line])
        try:
            assert pool_alloc(p, leaked, LEAK) == LEAK
        finally:
            g.resume([rx_line])
        leaky = [agent.stats("live-cons").conservation for _ in range(20)]
        assert not any(c.ok for c in leaky), leaky[0]
        assert all(c.in_flight >= LEAK for c in leaky)

        assert not g.pause([rx_line])  # give them back: the accounting is whole again
        try:
            pool_free_owner(p, leaked, LEAK)
        finally:
            g.resume([rx_line])
        assert all(agent.stats("live-cons").conservation.ok for _ in range(20))
