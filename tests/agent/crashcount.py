"""What the crash-count tests share: waiting until a killed process's graph has drained."""

from __future__ import annotations

import time

from micronf.agent.core import Agent
from micronf.api.models import GraphStats


def wait_drained(agent: Agent, name: str, timeout: float = 60) -> GraphStats:
    """Stats of ``name`` once its source is exhausted, nothing is in flight and every frame that
    entered is out or counted as dropped."""
    deadline = time.monotonic() + timeout
    while True:
        s = agent.stats(name)
        if s.rx["exhausted"] and s.conservation.in_flight == 0 and s.tx["out"]["frames"] + sum(
                s.drops.values()) >= s.rx["frames"]:
            return s
        assert time.monotonic() < deadline, f"did not drain: {s.rx} {s.conservation}"
        time.sleep(0.05)
