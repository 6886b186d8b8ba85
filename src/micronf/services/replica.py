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
   Plan the layout with :func:`replica_spec` (fused whole, batches of at least :data:`BATCH`).
3. Tx (:class:`~micronf.services.tx.TxStage`): the exit rings drained, sent, counted, freed through
   return ring ``client`` (the Tx service's: the agent passes ``io_client_base + TX_SLOT``).

A step moves ``max(RxConfig.burst, DEFAULT_BURST)`` frames at most, cut to the smallest ring: every
ring must take a whole burst (``ring_capacity >= 4096`` for the default), the Tx burst is raised to
the Rx burst. The per-step Python cost (three calls into compiled code: ~10 µs at K = 1, ~25 µs at
K = 8 where the hot loop's arguments hold 8 stages) is then paid once per 4096 packets: measured
(CPU time, K = 1), bursts of 1024 / 2048 / 4096 cost 166 / 142 / 134 cycles per packet for the
whole replica, so one compiled call per step would gain at most ~5 %. Nothing is held between
steps: pausing or stopping it is safe.

Pinning: the CPU is ``RxConfig.cpu``, or else the layout's process CPU; the policy ``RxConfig.policy``.
Privileges: the input and outputs are opened and the scheduling set first, then the process drops
to the graph's uid with no capabilities (:func:`~micronf.runtime.privileges.drop_for_service`)
before any µNF code is instantiated.

After a ``kill -9`` (what a supervisor does): the replica played three roles, and the segment
records each role's state where the separate processes record it; no other process shares the
segment, so nothing needs pausing. :func:`recover` then, in this order:

- settles the Rx journal (:func:`~micronf.services.rx.settle`: the frames of the burst in hand that
  entered the entry ring are ``accepted``, the rest ``lost_in_crash`` in the Rx counters);
- takes the µNF role's counted-but-unfreed drops (``GraphRuntime.counted_unfreed()``, process 0)
  and the Tx role's counted-but-unfreed batch (:func:`~micronf.services.tx.counted_unfreed`, return
  ring ``client``, the Tx control line), reclaims every buffer no ring, return ring or free stack
  holds (:func:`~micronf.dataplane.reclaim.reclaim`) and settles those counts, so the reclaim does
  not count them again;
- returns what was lost: the accepted packets the dead process held uncounted, i.e. accepted minus
  done (sent, refused, freed inside) minus what waits in the rings minus earlier such losses. (The
  reclaim's own count mixes the Rx role's burst, already in ``lost_in_crash``, with these: it is not
  the loss.)

Then start the stage again: a replayed source resumes at the ``frames`` counter (per shard), the
packets waiting in the exit and entry rings go out in its first step, before any new frame (so the
backlog causes no drop), and
``rx frames == tx + drops + lost + in_flight`` holds exactly for the replica (``lost``: the sum of
the recoveries' ``held_lost``), and summed over the replicas for the graph.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from micronf.dataplane.control import ControlLine
from micronf.dataplane.reclaim import reclaim
from micronf.dataplane.ring import CAP, HEAD, TAIL
from micronf.io.backend import RxBackend, TxBackend
from micronf.runtime.graph import GraphSpec, fuse_whole
from micronf.runtime.launch import GraphRuntime
from micronf.runtime.privileges import drop_for_service
from micronf.runtime.process import Pacing, StageError
from micronf.runtime.scheduling import apply_scheduling
from micronf.runtime.stage import GraphMemory
from micronf.runtime.unf import UnfStage
from micronf.services import rx as rx_service
from micronf.services import tx as tx_service
from micronf.services.config import read_rx_config, read_tx_config
from micronf.services.iomem import RX_INDEX, service_error
from micronf.services.rx import RxStage, open_input, settle
from micronf.services.tx import TxStage, close_outputs, counted_unfreed, open_outputs, tx_done

STAGE = __name__  # the module path the runtime's process runner starts (``spawn_io(slot, STAGE, client)``)
RX_SLOT, TX_SLOT = 0, 1  # the replica runs in io_line(RX_SLOT) and frees through client io_client_base + TX_SLOT
DEFAULT_BURST = 4096  # frames per step when the Rx config asks for less (see the module docstring)
BATCH = 512  # the fused µNFs' batch in a replica (GraphSpec.burst at least this, see replica_spec)


def replica_spec(spec: GraphSpec) -> GraphSpec:
    """What one replica of ``spec`` runs: every µNF fused (:func:`~micronf.runtime.graph.fuse_whole`,
    raises ``GraphError`` for a graph that is not a chain) with a batch of at least :data:`BATCH`
    packets. A replica's hot loop runs whole bursts, so large batches only amortize the per-batch
    costs (ring calls, clock reads, counters): measured on K x IPTtlDecrementer, batch 64 → 512 took
    the fused part from 76 to 56 ns/packet at K = 8, from 13 to 9 at K = 1."""
    whole = fuse_whole(spec)
    return whole.model_copy(update={"burst": max(whole.burst, BATCH)})


GATHER_MIN = 256  # a step asks its source again only after a call that brought at least this many frames


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` found after a replica's death."""

    rx_lost: int  # frames of the Rx burst in hand that never entered: now ``lost_in_crash`` in the Rx counters
    held_lost: int  # accepted packets the µNF and Tx roles held and had not counted: gone with the process
    reclaimed: int  # buffers given back to the pool


def recover(g: GraphRuntime, exits: int, lost_before: int = 0) -> Recovery:
    """Settle the segment of a replica whose process died (call it after the death, before starting
    the stage again); ``exits``: the Tx config's outputs, ``lost_before``: ``held_lost`` of earlier
    recoveries of this replica.

    The three roles' records (see the module docstring): the Rx journal is settled here (the new
    process then finds it closed), every unreachable buffer is reclaimed, and the µNF and Tx roles'
    counted-but-unfreed buffers are settled so they are not counted twice. Nothing else uses the
    segment, so the packets the dead process held uncounted are exactly the accepted ones neither
    done (sent, refused, freed inside) nor in a ring, minus earlier losses."""
    mem = g.memory()
    rx_lost = settle(mem.seg.view("rx.journal", np.int64), mem.seg.view("rx.stats", np.int64), mem.rings.ctrl)
    tx_line = g.io_line(TX_SLOT)
    unfreed = g.counted_unfreed()
    tx_unfreed = counted_unfreed(mem, exits, g.io_client_base + TX_SLOT, tx_line)
    reclaimed = reclaim(mem.pool.arrays, mem.rings.ctrl, mem.rings.slots)
    g.settle(unfreed)
    tx_line.settle(tx_unfreed)
    accepted = int(mem.seg.view("rx.stats", np.int64)[RX_INDEX["accepted"]])
    held = accepted - tx_done(mem, exits) - g.freed_inside() - int(g.ring_occupancy().sum()) - lost_before
    return Recovery(rx_lost, held, reclaimed)


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
        self.backlog = True  # what a killed predecessor left in the rings goes out before new frames come in

    def step(self) -> int:
        if self.backlog:  # first step: exits, then the entry ring, drained with nothing added (no drop)
            self.backlog = False
            while self.tx.step() >= self.tx.burst:
                pass
            got = 0
        else:  # a whole burst: a replayed source hands out at most one pass over its frames per call (a
            # generator shard of 500 templates: 500), and a step that small would be moderated like a trickle
            # (a paced source returns a few frames a call: then one call, no per-frame Python loop)
            got = 0
            while got < self.rx.burst:
                n = self.rx.step(self.rx.burst - got)
                got += n
                if n < GATHER_MIN:
                    break
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
              "one (plan it with replica_spec)", file=sys.stderr)
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
