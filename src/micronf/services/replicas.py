"""N run-to-completion replicas of a graph on this machine, read as one (tests, benchmarks, tools).

:class:`ReplicaSet` plans the graph with every µNF fused (:func:`~micronf.services.replica.replica_spec`)
and creates one :class:`~micronf.runtime.launch.GraphRuntime` per replica: its own segment with
pool, rings, counters and Rx/Tx configs. Replica ``i`` takes flow shard ``i`` of ``n`` of the input
(``RxConfig.shard``), is pinned to ``cpus[i % len(cpus)]``, and runs as one process (the stage
:mod:`micronf.services.replica`, forked by its graph's zygote in the Rx service's control line,
freeing through the Tx service's pool client, as the agent would run it). :meth:`ReplicaSet.stats`
merges the replicas' counters into one view: Rx counters summed, Tx counters per exit summed, each
µNF's runtime and own counters summed, and conservation over all of them.

The agent deploys replicas through its own deployments (supervision, restarts); this class is the
runtime-level way to run them without an agent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from micronf.runtime.graph import GraphSpec, plan
from micronf.runtime.launch import GraphRuntime, LaunchError
from micronf.runtime.zygote import Child
from micronf.services.config import RxConfig, TxConfig, write_config
from micronf.services.iomem import RX_COUNTERS, TX_COUNTERS, TX_WORDS, io_regions, read_error
from micronf.services.replica import DEFAULT_BURST, RX_SLOT, STAGE, TX_SLOT, Recovery, recover, replica_spec

RX_DROPS = ("unmatched", "rule_drop", "pool_empty", "entry_full", "oversize", "lost_in_crash")


@dataclass(frozen=True)
class MergedStats:
    """The counters of every replica, summed (see :meth:`ReplicaSet.stats`)."""

    rx: dict[str, int]  # Rx counters (frames, accepted, drops by reason, ...); ``exhausted``: replicas whose source is
    tx: dict[str, dict[str, int]]  # per exit: Tx counters (frames, refused, no_output, ...)
    nodes: dict[str, dict[str, int]]  # per µNF: runtime counters (rx, tx, dropped, full, cycles, ...)
    counters: dict[str, dict[str, int]]  # per µNF: its own counters
    freed_inside: int  # packets the µNFs freed instead of passing on (drop verdicts, full, unconnected)
    in_flight: int  # buffers in use (in rings, or held by a process)
    lost: int = 0  # accepted packets killed replicas held uncounted (see services.replica.recover)

    @property
    def sent(self) -> int:
        return sum(t["frames"] for t in self.tx.values())

    @property
    def dropped(self) -> int:
        """Every packet that entered and did not leave: dropped by the Rx (each reason, the frames of a
        killed replica's burst in hand too), freed inside, refused by an output or sent to no output,
        held by a killed replica."""
        refused = sum(t["refused"] + t["no_output"] for t in self.tx.values())
        return sum(self.rx[k] for k in RX_DROPS) + self.freed_inside + refused + self.lost

    @property
    def conserved(self) -> bool:
        """``rx == tx + dropped + in_flight`` over all replicas (``dropped`` includes crash losses)."""
        return self.rx["frames"] == self.sent + self.dropped + self.in_flight


class ReplicaSet:
    """``n`` replicas of ``spec`` (use as a context manager); see the module docstring.

    ``rx``: the input (``shard``/``shards`` are set per replica; ``fanout_group`` defaults to one
    derived from the first segment's name); ``tx``: the outputs, one config for every replica or one
    per replica (e.g. a pcap file each). ``burst``: frames per replica step (the rings are made at
    least that large)."""

    def __init__(self, spec: GraphSpec, n: int, rx: RxConfig, tx: TxConfig | Sequence[TxConfig], *,
                 cpus: Sequence[int] | None = None, burst: int = DEFAULT_BURST, ring_capacity: int = 0,
                 pool_slots: int = 0, fanout_group: int | None = None, unprivileged: bool = True) -> None:
        if n < 1:
            raise ValueError(f"need at least one replica, got {n}")
        txs = [tx] * n if isinstance(tx, TxConfig) else list(tx)
        if len(txs) != n:
            raise ValueError(f"{len(txs)} Tx configs for {n} replicas")
        self.n = n
        self.layout = plan(replica_spec(spec))
        self.cpus = list(cpus) if cpus is not None else sorted(os.sched_getaffinity(0))
        capacity = max(ring_capacity, 1 << (max(burst, 256) - 1).bit_length())
        tag = f"{spec.name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        group = fanout_group if fanout_group is not None else hash(tag) & 0xFFFF
        self.graphs = [GraphRuntime(self.layout, segment=f"{tag}-r{i}", ring_capacity=capacity,
                                    pool_slots=pool_slots or 4 * capacity, preload=(STAGE,),
                                    extra_regions=io_regions(), unprivileged=unprivileged) for i in range(n)]
        self.rx = [RxConfig.model_validate({**rx.model_dump(), "shard": i, "shards": n, "fanout_group": group,
                                            "burst": burst, "cpu": self.cpus[i % len(self.cpus)]}) for i in range(n)]
        self.tx = [t.model_copy(update={"burst": burst}) for t in txs]
        self.children: list[Child | None] = [None] * n
        self.lost = [0] * n  # per replica: packets its killed processes held (Recovery.held_lost, summed)
        self.exit_names = list(dict.fromkeys(x.name for x in self.layout.exits))

    def start(self, timeout: float = 120.0) -> None:
        """Create every replica's segment, start its process, wait until all are ready, then let
        them all go at once (each is paused from its fork on: the zygotes start one after the other,
        and an early replica would otherwise run its shard alone for seconds)."""
        try:
            for i, g in enumerate(self.graphs):
                g.create()
                write_config(g.segment(), self.rx[i])
                write_config(g.segment(), self.tx[i])
            for i, g in enumerate(self.graphs):
                self.start_replica(i)
                g.io_line(RX_SLOT).request_pause()  # seen before its first step: opening takes milliseconds
            deadline = time.monotonic() + timeout
            for i in range(self.n):
                self.wait_ready(i, deadline)
            for g in self.graphs:
                g.io_line(RX_SLOT).resume()
        except BaseException:
            self.stop()
            self.close()
            raise

    def start_replica(self, i: int) -> Child:
        """(Re)start replica ``i``'s process (after a crash: once its segment is reclaimed)."""
        g = self.graphs[i]
        child = g.spawn_io(RX_SLOT, STAGE, str(g.io_client_base + TX_SLOT))
        old, self.children[i] = self.children[i], child
        if old is not None:
            old.close()
        return child

    def restart(self, i: int, timeout: float = 60.0) -> Recovery:
        """Replica ``i``'s process died: settle its segment (:func:`~micronf.services.replica.recover`)
        and start it again; returns what the crash cost."""
        child = self.children[i]
        if child is None or child.poll() is None:
            raise RuntimeError(f"replica {i} is running: only a dead replica is recovered")
        found = recover(self.graphs[i], len(self.tx[i].outputs), self.lost[i])
        self.lost[i] += found.held_lost
        self.start_replica(i)
        self.wait_ready(i, time.monotonic() + timeout)
        return found

    def wait_ready(self, i: int, deadline: float) -> None:
        g, child = self.graphs[i], self.children[i]
        assert child is not None
        while not g.io_line(RX_SLOT).ready:
            code = child.poll()
            if code is not None or time.monotonic() > deadline:
                why = read_error(g.segment()) or (f"exit status {code}" if code is not None else "timeout")
                raise LaunchError(f"replica {i} of {self.layout.name!r} failed to start: {why}")
            time.sleep(0.002)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every replica's process (idempotent)."""
        for g in self.graphs:
            if g.mem is not None:
                g.io_line(RX_SLOT).request_stop()
        for i, child in enumerate(self.children):
            if child is not None:
                try:
                    child.wait(timeout=timeout)
                except Exception:
                    child.kill()
                child.close()
                self.children[i] = None
        for g in self.graphs:
            g.stop()

    def close(self) -> None:
        for g in self.graphs:
            g.close()

    def __enter__(self) -> ReplicaSet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    # -- observation -------------------------------------------------------------------------
    def pids(self) -> list[int]:
        return [g.io_line(RX_SLOT).pid for g in self.graphs]

    def replica_stats(self, i: int) -> MergedStats:
        """The counters of replica ``i`` alone."""
        g = self.graphs[i]
        seg = g.segment()
        rxv = seg.view("rx.stats", np.int64)
        txv = seg.view("tx.stats", np.int64).reshape(-1, TX_WORDS)
        names = [out.exit for out in self.tx[i].outputs]
        nodes = {n.name: g.node_stats(n.name) for n in self.layout.nodes}
        return MergedStats(
            rx={c: int(rxv[k]) for k, c in enumerate(RX_COUNTERS)},
            tx={x: {c: int(txv[names.index(x), k]) if x in names else 0 for k, c in enumerate(TX_COUNTERS)}
                for x in self.exit_names},
            nodes={name: s.runtime for name, s in nodes.items()},
            counters={name: s.counters for name, s in nodes.items()},
            freed_inside=g.freed_inside(),
            in_flight=g.memory().pool.stats().in_use,
            lost=self.lost[i],
        )

    def stats(self) -> MergedStats:
        """Every replica's counters summed: the replicated graph read as one."""
        parts = [self.replica_stats(i) for i in range(self.n)]

        def total(rows: list[dict[str, int]]) -> dict[str, int]:
            return {k: sum(r[k] for r in rows) for k in rows[0]}

        return MergedStats(
            rx=total([p.rx for p in parts]),
            tx={x: total([p.tx[x] for p in parts]) for x in self.exit_names},
            nodes={n: total([p.nodes[n] for p in parts]) for n in parts[0].nodes},
            counters={n: total([p.counters[n] for p in parts]) for n in parts[0].counters},
            freed_inside=sum(p.freed_inside for p in parts),
            in_flight=sum(p.in_flight for p in parts),
            lost=sum(p.lost for p in parts),
        )
