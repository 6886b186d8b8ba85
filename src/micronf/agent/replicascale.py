"""Adding and removing replicas of a running replicated graph: the facts the decisions rest on.

The flows move as the jump hash says. Replica ``i`` of ``n`` takes the flows with
``jump_hash(flow hash, n) == i``; going to ``n + 1`` moves about ``1/(n + 1)`` of the flows, each from
its replica to the new one, and going back to ``n`` moves exactly those back (the other flows stay
where they are). (AF_PACKET inputs are spread by the kernel's fanout hash instead, which may move
any flow.) A stateful µNF's state is per replica: a flow that moves starts with fresh state on its new
replica (a CountUrl's counts stay where they were made, and the graph's sums stay right).

``ReplicatedDeployment`` carries a decision out: the other replicas are *resharded*, each stopped
after its step in hand (a step runs a burst to completion: nothing stays held or in flight), its Rx
config rewritten with the new number of shards and started again from its zygote (milliseconds); a
removed replica's final counters are kept (``Part(retired=True)``, in the agent's record too) so the
graph's counters never go back.

Refused, with the reason logged and the cool-down started (:func:`refusal`): a finite replayed input
(a generator with a ``count``, a pcap replayed a number of times: its shards are fixed positions in
the trace, resharding would replay or skip frames), file outputs (one file per replica), no free CPU
for one more replica, the last replica. What is measured: :func:`input_drops` and :func:`cpu_seconds`.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from micronf.agent.files import FILE_OUTPUTS
from micronf.api.models import DeployRequest
from micronf.dataplane.segment import Memory
from micronf.io.generator_spec import GeneratorSpec
from micronf.io.replay import PcapRxSpec
from micronf.io.specs import check_rx
from micronf.services.iomem import RX_INDEX

INPUT_DROPS = ("kernel_drops", "pool_empty", "entry_full")  # frames an input lost before any µNF saw them


def input_drops(segments: list[Memory]) -> int:
    """Frames the input lost, over the replicas of ``segments`` (what makes the autoscaler add one)."""
    total = 0
    for seg in segments:
        rx = seg.view("rx.stats", np.int64)
        total += sum(int(rx[RX_INDEX[k]]) for k in INPUT_DROPS)
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used; 0 when it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def refusal(req: DeployRequest, action: str, *, replicas: int, free_cpus: int) -> str | None:
    """Why a decision ``action`` ("out"/"in") cannot be carried out on ``req``'s graph, running
    ``replicas`` replicas with ``free_cpus`` CPUs free (see the module docstring), or None."""
    rx = check_rx(req.rx) if req.rx is not None else None
    if (isinstance(rx, GeneratorSpec) and rx.count is not None) or (isinstance(rx, PcapRxSpec) and rx.loop != 0):
        return "its input is a finite replay (resharding would replay or skip frames)"
    if any(out.backend.get("kind") in FILE_OUTPUTS for out in req.outputs.values()):
        return "it writes a file per replica"
    if action == "out" and not free_cpus:
        return "no CPU is free for one more replica"
    if action == "in" and replicas < 2:
        return "it runs a single replica"
    return None
