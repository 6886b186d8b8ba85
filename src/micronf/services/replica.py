"""The replica process: a whole graph run to completion by one process on one core (§VII-B4).

Why: pipelined, a graph hands every packet across cores (Rx → µNF processes → Tx), paying a
cache-line transfer per hand-off and a core for the I/O. A *replica* is a whole copy of the graph in
its own segment (pool, rings, counters, Rx/Tx configs), planned with every µNF in one cluster
(:func:`micronf.runtime.graph.fuse_whole`), and run by ONE process pinned to its core. N replicas
on N cores each take one flow shard of the input (``RxConfig.shard``/``shards``, see
:mod:`micronf.io.shard`), so nothing crosses a core and a flow stays on one replica.

Each step (:class:`ReplicaStage`) is one burst through the three stages this process combines:

1. Rx (:class:`~micronf.services.rx.RxStage`): one backend ``recv`` of up to ``RxConfig.burst``
   frames and one :func:`~micronf.services.rx.rx_burst` into the entry ring (journal, counters,
   classification unchanged). The process is the pool's owner (it allocates, as the Rx service does).
2. The fused µNFs (:class:`~micronf.runtime.unf.UnfStage`, the generated hot loop of process 0):
   exactly the batches now waiting in the entry ring (:meth:`~micronf.runtime.unf.UnfStage.drain`),
   never idling inside. Frees go through process 0's return ring (its client), as in a µNF process.
3. Tx (:class:`~micronf.services.tx.TxStage`): the exit rings drained, sent, counted, freed through
   return ring ``client`` (the Tx service's: the agent passes ``io_client_base + TX_SLOT``).

So every ring must take a whole burst (``ring_capacity >= RxConfig.burst``; the Tx burst is raised
to the Rx burst), and the per-step Python cost (three calls into compiled code, ~20-40 µs) is paid
once per burst, not per batch. Nothing is held between steps: pausing or stopping it is safe.

Pinning: the CPU is ``RxConfig.cpu``, or else the layout's process CPU; the policy ``RxConfig.policy``.
Privileges: the input and outputs are opened and the scheduling set first, then the process drops
to the graph's uid with no capabilities (:func:`~micronf.runtime.privileges.drop_for_service`)
before any µNF code is instantiated.

After a ``kill -9`` (what a supervisor does): the replica played three roles, and the segment
records each role's state as for the separate processes, so the usual restart applies to its
segment alone (no other process shares it: nothing to pause):

- reclaim the buffers no ring, return ring or free stack holds
  (:func:`~micronf.dataplane.reclaim.reclaim`), minus those already counted: the µNF role's counted
  but unfreed drops (``GraphRuntime.counted_unfreed()``, process 0, then ``settle`` them) and the Tx
  role's counted but unfreed batch (Tx counters minus return ring ``client``'s head minus the
  settled count of the Tx control line, then settle that line);
- start the stage again: its Rx role settles the burst the journal left open (frames that entered
  the entry ring count as accepted, the rest of the burst as ``lost_in_crash``) and a replayed
  source resumes at the ``frames`` counter (per shard); packets already in the entry or exit rings
  are carried on by the next steps.

Then ``rx frames == tx + drops + in_flight`` holds exactly for the replica, and the sum over the
replicas for the graph.
"""

from __future__ import annotations

import sys

from micronf.dataplane.control import ControlLine
from micronf.dataplane.ring import CAP, HEAD, TAIL
from micronf.io.backend import RxBackend, TxBackend
from micronf.runtime.privileges import drop_for_service
from micronf.runtime.process import Pacing, StageError
from micronf.runtime.scheduling import apply_scheduling
from micronf.runtime.stage import GraphMemory
from micronf.runtime.unf import UnfStage
from micronf.services import rx as rx_service
from micronf.services import tx as tx_service
from micronf.services.config import read_rx_config, read_tx_config
from micronf.services.iomem import service_error
from micronf.services.rx import RxStage, open_input
from micronf.services.tx import TxStage, close_outputs, open_outputs

STAGE = __name__  # the module path the runtime's process runner starts (``spawn_io(slot, STAGE, client)``)
DEFAULT_BURST = 2048  # frames per step when the Rx config asks for less (see the module docstring)


def warm(segment: str) -> None:
    """Compile (or load) the Rx and Tx kernels in the zygote (the hot loop is loaded by it anyway)."""
    rx_service.warm(segment)
    tx_service.warm(segment)


class ReplicaStage:
    """Rx burst → every µNF → Tx, one burst per step (see the module docstring)."""

    def __init__(self, mem: GraphMemory, rx: RxStage, unf: UnfStage, tx: TxStage) -> None:
        self.rx, self.unf, self.tx = rx, unf, tx
        self.ctrl = mem.rings.ctrl
        self.entry = mem.layout.entry_ring
        self.batch = mem.layout.burst

    def step(self) -> int:
        got = self.rx.step()
        ctrl, entry = self.ctrl, self.entry
        waiting = ctrl.item(entry, HEAD) - ctrl.item(entry, TAIL)  # this burst, or what a crash left
        if waiting:
            self.unf.drain(-(-waiting // self.batch))
        while self.tx.step() >= self.tx.burst:  # a full Tx burst: the exits may hold more
            pass
        return got

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


def open_stage(mem: GraphMemory, line: ControlLine, client: str) -> tuple[ReplicaStage, Pacing]:
    """The runner's entry (see ``micronf.runtime.process``): open the input and outputs, pin, become
    the graph's uid, then load the fused µNFs; ``client`` is the Tx role's pool return ring."""
    layout = mem.layout
    rx_cfg, tx_cfg = read_rx_config(mem.seg), read_tx_config(mem.seg)
    if len(layout.processes) != 1:
        print(f"micronf-replica[{layout.name}]: the layout has {len(layout.processes)} processes; a replica runs "
              "one (plan it with runtime.graph.fuse_whole)", file=sys.stderr)
        raise StageError(2)
    caps = mem.rings.ctrl[:, CAP]
    burst = min(max(rx_cfg.burst, DEFAULT_BURST), int(caps[caps > 0].min()))  # every ring takes a whole burst
    rx_cfg = rx_cfg.model_copy(update={"burst": burst})
    tx_cfg = tx_cfg.model_copy(update={"burst": burst})
    backend: RxBackend | None = None
    outputs: list[TxBackend | None] = []
    try:
        cpu = rx_cfg.cpu if rx_cfg.cpu is not None else layout.processes[0].cpu
        apply_scheduling(0, cpu, rx_cfg.policy)
        backend = open_input(rx_cfg)
        outputs = open_outputs(tx_cfg)
        drop_for_service(mem)  # everything is open: the graph's uid from here on, before any µNF code
    except (OSError, ValueError) as exc:
        if backend is not None:
            backend.close()
        close_outputs(outputs)
        raise service_error(mem.seg, "Replica", rx_cfg.name, exc) from None
    stage = ReplicaStage(mem, RxStage(mem, rx_cfg, backend), UnfStage(mem, line, 0, 1),
                         TxStage(mem, tx_cfg, outputs, int(client)))
    return stage, Pacing(burst=stage.rx.burst, coalesce_us=rx_cfg.coalesce_us)
