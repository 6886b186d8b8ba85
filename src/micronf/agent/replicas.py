"""A graph deployed as N run-to-completion replicas (``DeployRequest.mode == "replicas"``).

Each replica is a whole copy of the graph, independent of the others: a segment of its own
(``mnf-<agent id>-<name>.r<i>``: pool, rings, counters, the Rx/Tx configs), built from the graph
fused whole (``micronf.services.replica.replica_spec``: every µNF in one process, chain order, batches
of 512), rings that take a whole replica burst (``ring_capacity`` raised to 4096), a zygote
of its own, and ONE process (the stage ``micronf.services.replica``) pinned to the replica's CPU
that runs an Rx burst of its shard of the input, every µNF, and the Tx, and owns its pool. The
input is sharded by flow (``RxConfig.shard``/``shards``: a replayed source replays its flows' frames,
AF_PACKET sockets join one ``PACKET_FANOUT_HASH`` group), so every packet of a flow is handled by one
replica and a stateful µNF keeps per-replica state for its flows.

Refused (:class:`InvalidDeploymentError`, a 400): a graph that cannot fuse whole (the reason is
``fuse_whole``'s), more replicas than CPUs this agent may use, a ``replica_cpus`` entry it may not
use or that two replicas share. A file output (pcap, seqcheck) becomes one file per replica,
``<stem>.r<i><suffix>`` (``out.pcap`` → ``out.r0.pcap``, ``out.r1.pcap``; see
:func:`micronf.agent.files.replica_file`), all created in the agent's data directory under its
usual rules before anything starts.

Supervision: a replica process that dies is restarted on its own; nothing else pauses (the other
replicas share nothing with it). Its segment is quiet then (the agent is the only one touching it),
so the accounting is exact without pausing anyone (``micronf.services.replica.recover``): the Rx
burst it was in is settled from the Rx journal (frames that had entered the graph are ``accepted``,
the rest ``@rx.lost_in_crash``), every buffer not on the free stack, in a return ring or in a ring is
given back, and what was really in flight in it — accepted, not yet counted as sent or dropped, in
no ring — is that replica's ``<µNFs>.lost_in_crash``. Buffers it had already counted (µNF drops, Tx
sends) are reclaimed too but not counted again.

Stats merge the replicas into one graph (:mod:`micronf.agent.mergestats`) with a per-replica
breakdown. A new agent adopts a replicated deployment from all its segments at once (:meth:`adopt`).
"""

from __future__ import annotations

import logging
import os
import re
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from micronf.agent.autoscaler import REPLICAS, Autoscaler, Decision, ReplicaSampler
from micronf.agent.build import (
    SEGMENT_PREFIX,
    new_runtime,
    read_record,
    restart_event,
    save_record,
    validated_layout,
    write_service_configs,
)
from micronf.agent.files import FILE_OUTPUTS, replica_file
from micronf.agent.mergestats import Part, merge
from micronf.agent.replicascale import cpu_seconds, input_drops, refusal
from micronf.agent.stats import GraphCounters
from micronf.api.errors import DeploymentFailedError, InvalidDeploymentError
from micronf.api.models import (
    DeploymentInfo,
    DeployRequest,
    GraphStats,
    OutputSpec,
    ProcessInfo,
    RestartEventInfo,
    ScaleEventInfo,
)
from micronf.dataplane import reclaim as reclaim_kernels
from micronf.dataplane.control import ControlLine
from micronf.dataplane.segment import Segment
from micronf.runtime.graph import GraphError
from micronf.runtime.launch import GraphRuntime, LaunchError
from micronf.runtime.zygote import Child, ZygoteError
from micronf.services.config import read_rx_config
from micronf.services.iomem import calibrate_ns_per_cycle, read_error
from micronf.services.replica import DEFAULT_BURST, RX_SLOT, TX_SLOT, recover, replica_spec
from micronf.services.replica import STAGE as REPLICA_STAGE

log = logging.getLogger("micronf.agent")

# a replica runs in the Rx service's control line and frees (its Tx role) through the Tx service's pool client
REPLICA_SLOT, REPLICA_CLIENT = RX_SLOT, TX_SLOT
_REPLICA_SUFFIX = re.compile(r"\.r[0-9]+$")
RESHARD_TIMEOUT_S = 60.0  # a replica stopped after its step, or started again, within this


def replica_segment(base: str, index: int) -> str:
    """The segment of replica ``index`` of the deployment whose segment would be ``base``."""
    return f"{base}.r{index}"


def base_segment(name: str) -> str:
    """``name`` without a replica's ``.r<i>`` (deployment names have no '.': no other segment ends so)."""
    return _REPLICA_SUFFIX.sub("", name)


def usable_cpus() -> list[int]:
    """The CPUs this agent (and so the processes it forks) may run on."""
    return sorted(os.sched_getaffinity(0))


def replica_cpus(req: DeployRequest) -> list[int]:
    """The CPU of each replica: ``replica_cpus``, else replica i on the i-th CPU this agent may use
    (i modulo them, as more replicas than CPUs are refused); refuses a CPU the agent may not use and
    a CPU given to two replicas."""
    usable = usable_cpus()
    if req.replicas > len(usable):
        raise InvalidDeploymentError(f"replicas: {req.replicas} replicas need as many CPUs, this agent may use "
                                     f"{len(usable)} ({', '.join(map(str, usable))})")
    if req.replica_cpus is None:
        return usable[: req.replicas]
    cpus = req.replica_cpus
    bad = sorted(set(cpus) - set(usable))
    if bad:
        raise InvalidDeploymentError(f"replica_cpus: CPU {', '.join(map(str, bad))} is not one this agent may use "
                                     f"({', '.join(map(str, usable))})")
    if len(set(cpus)) != len(cpus):
        raise InvalidDeploymentError(f"replica_cpus: {cpus} gives a CPU to two replicas (each runs on its own)")
    return cpus


def fanout_group(agent_id: str, name: str) -> int:
    """The AF_PACKET fanout group id the replicas of deployment ``name`` share: 16 bits of a hash of the
    agent id and the name, so stable across restarts, resharding and adoption. (Two replicated
    deployments on one interface whose ids collided would share one group, 1 in 65536; on different
    interfaces the kernel refuses the second one's sockets, and the deployment fails with its reason.)"""
    return zlib.crc32(f"{agent_id}/{name}".encode()) & 0xFFFF


@dataclass
class Replica:
    """One replica: its runtime (segment, zygote), its process, its CPU and its restarts."""

    index: int
    cpu: int
    runtime: GraphRuntime
    child: Child | None = None
    restarts: list[RestartEventInfo] = field(default_factory=list)

    @property
    def line(self) -> ControlLine:
        return self.runtime.io_line(REPLICA_SLOT)


class ReplicatedDeployment:
    """A graph deployed as replicas (see the module docstring); the agent drives it like a
    :class:`~micronf.agent.deployment.Deployment`."""

    def __init__(self, req: DeployRequest, *, agent_id: str, detached: bool = False,
                 cpus: list[int] | None = None) -> None:
        """``cpus``: one per replica (an adopted deployment's, as recorded), default :func:`replica_cpus`."""
        self.req = req
        self.agent_id = agent_id
        self.detached = detached
        self.created_at = time.time()
        self.state: str = "running"
        self.input_paused = False  # set by pause_input: no autoscaling (resharding) from then on
        self.ns_per_cycle = 1.0
        self.scale_events: list[ScaleEventInfo] = []
        self.autoscaler = Autoscaler(req.autoscale)
        self.sampler = ReplicaSampler()
        self.retired: list[Part] = []  # replicas removed by a scale-in: their final counters
        try:
            spec = replica_spec(req.graph)
        except GraphError as exc:
            raise InvalidDeploymentError(f"mode replicas: {exc}") from None
        self.layout, self.exit_names = validated_layout(req, spec, spare_rings=0)  # replicas scale by replica
        self.ring_capacity = max(req.ring_capacity, DEFAULT_BURST)  # every ring takes a whole replica burst
        self.base = f"{SEGMENT_PREFIX}{agent_id}-{req.name}"
        self.units = [self._unit(i, c) for i, c in enumerate(replica_cpus(req) if cpus is None else cpus)]

    def _unit(self, index: int, cpu: int) -> Replica:
        runtime = new_runtime(self.req, self.layout, replica_segment(self.base, index), preload=(REPLICA_STAGE,),
                              detached=self.detached, ring_capacity=self.ring_capacity)
        return Replica(index=index, cpu=cpu, runtime=runtime)

    @property
    def segment_names(self) -> list[str]:
        return [u.runtime.segment_name for u in self.units]

    # -- lifecycle ---------------------------------------------------------------------------
    def outputs(self, index: int) -> dict[str, OutputSpec]:
        """The outputs of replica ``index``: the request's, each file output its own file."""
        outs = {}
        for name, out in self.req.outputs.items():
            backend = out.backend
            if backend.get("kind") in FILE_OUTPUTS and "path" in backend:
                backend = {**backend, "path": replica_file(str(backend["path"]), index)}
            outs[name] = out.model_copy(update={"backend": backend})
        return outs

    def _save(self, unit: Replica) -> None:
        save_record(unit.runtime.segment(), self.req, ns_per_cycle=self.ns_per_cycle, created_at=self.created_at,
                    restarts=unit.restarts, replica=unit.index, cpu=unit.cpu,
                    retired=[p.model_dump() for p in self.retired], scale_events=[
                        ev.model_dump(mode="json") for ev in self.scale_events])

    def start(self, timeout: float = 120.0) -> None:
        """Create every replica's segment and zygote, then start every replica process; all of them
        come up or none stays (nothing running, no segment)."""
        reclaim_kernels.warm()
        self.ns_per_cycle = calibrate_ns_per_cycle()
        failed: Replica | None = None
        try:
            for unit in self.units:
                failed = unit
                self._create(unit)
            for unit in self.units:
                failed = unit
                self._spawn(unit)
            for unit in self.units:
                failed = unit
                self._wait_ready(unit, timeout)
        except (LaunchError, ZygoteError, OSError) as exc:
            why = read_error(failed.runtime.segment()) if failed is not None and failed.runtime.seg else ""
            self.stop()
            raise DeploymentFailedError(f"deployment {self.req.name!r} did not start: {why or exc}") from None

    def _create(self, unit: Replica) -> None:
        """Segment, record, configs (shard ``index`` of the replicas) and zygote of ``unit``."""
        g = unit.runtime
        g.create()
        self._save(unit)
        self._write_configs(unit)
        g.ensure_zygote()

    def _write_configs(self, unit: Replica) -> None:
        """The Rx/Tx configs of ``unit``: its outputs, its CPU, its shard of the replicas there are now."""
        write_service_configs(unit.runtime.segment(), self.req, self.exit_names, self.ns_per_cycle,
                              outputs=self.outputs(unit.index), cpu=unit.cpu, shard=unit.index, shards=len(self.units),
                              fanout_group=fanout_group(self.agent_id, self.req.name))

    def _spawn(self, unit: Replica) -> None:
        g = unit.runtime
        child = g.spawn_io(REPLICA_SLOT, REPLICA_STAGE, str(g.io_client_base + REPLICA_CLIENT))
        if unit.child is not None:
            unit.child.close()
        unit.child = child

    def _wait_ready(self, unit: Replica, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        child = unit.child
        assert child is not None
        while not unit.line.ready:
            code = child.poll()
            if code is not None:
                raise LaunchError(f"replica {unit.index} exited with status {code}")
            if time.monotonic() > deadline:
                raise LaunchError(f"replica {unit.index} did not become ready")
            time.sleep(0.002)

    def stop(self) -> None:
        """Stop every replica and remove every segment (idempotent)."""
        self.state = "stopping"
        for unit in self.units:
            if unit.runtime.mem is not None:
                unit.line.request_stop()
        for unit in self.units:
            if unit.child is not None:
                try:
                    unit.child.wait(timeout=10)
                except Exception:
                    unit.child.kill()
                unit.child.close()
                unit.child = None
            unit.runtime.stop()
            unit.runtime.close()

    def leave_running(self) -> None:
        """Let go of the replicas without stopping them (see ``Deployment.leave_running``)."""
        self.state = "stopping"
        for unit in self.units:
            g = unit.runtime
            if unit.child is not None:
                unit.child.close()
            if g.zygote is not None:
                g.zygote.close()
                g.zygote = None
            if g.seg is not None:
                g.seg.close()

    @classmethod
    def adopt(cls, segs: list[tuple[Segment, set[int]]], *, agent_id: str,
              detached: bool = True) -> ReplicatedDeployment:
        """The replicated deployment running from the segments ``segs`` (each with the pids that map
        it) since an earlier agent. Every replica must be there (0..N-1, agreeing on N); a replica
        whose process is gone is adopted as exited, for the supervisor to restart."""
        recs = sorted(((read_record(seg), seg, alive) for seg, alive in segs), key=lambda r: int(r[0].extra["replica"]))
        first = recs[0][0]
        indices = [int(r.extra["replica"]) for r, _, _ in recs]
        if indices != list(range(len(recs))):
            raise InvalidDeploymentError(f"deployment {first.req.name!r}: replicas {indices} found, not 0..N-1")
        dep = cls(first.req, agent_id=agent_id, detached=detached, cpus=[int(r.extra["cpu"]) for r, _, _ in recs])
        dep.created_at, dep.ns_per_cycle = first.created_at, first.ns_per_cycle
        dep.retired = [Part.model_validate(p) for p in first.extra.get("retired", [])]
        dep.scale_events = [ScaleEventInfo.model_validate(ev) for ev in first.extra.get("scale_events", [])]
        for unit, (rec, seg, alive) in zip(dep.units, recs, strict=True):
            if rec.req != first.req or unit.runtime.segment_name != seg.name:
                raise InvalidDeploymentError(f"segment {seg.name!r} does not hold replica {unit.index} of "
                                             f"{first.req.name!r}")
            shards = read_rx_config(seg).shards
            if shards != len(recs):
                raise InvalidDeploymentError(f"segment {seg.name!r}: a shard of {shards}, {len(recs)} replicas found")
            unit.restarts = rec.restarts
            io = unit.runtime.adopt(seg, alive)
            unit.child = io[REPLICA_SLOT]
        return dep

    def running(self) -> int:
        """How many replica processes run."""
        return sum(u.child is not None and u.child.poll() is None for u in self.units)

    # -- supervision -------------------------------------------------------------------------
    def supervise(self) -> None:
        """Restart every replica process that died, and every zygote (see the module docstring)."""
        if self.state != "running":
            return
        for unit in self.units:
            g = unit.runtime
            if g.zygote is not None and not g.zygote.alive:
                log.warning("deployment %s: replica %d's zygote exited; starting a new one", self.req.name,
                            unit.index)
                g.ensure_zygote()
            code = unit.child.poll() if unit.child is not None else None
            if code is not None:
                self._restart(unit, code)

    def _counters(self, unit: Replica) -> GraphCounters:
        # the replica moves bursts of DEFAULT_BURST (at most a ring's capacity), more than the request's burst
        burst = min(max(self.req.burst, DEFAULT_BURST), self.ring_capacity)
        return GraphCounters(unit.runtime, self.req, self.exit_names, unit.restarts, io_burst=burst)

    def _restart(self, unit: Replica, code: int) -> None:
        """Account for what the dead process of ``unit`` held, then start it again (see the module
        docstring); the other replicas go on untouched."""
        t0 = time.monotonic()
        found = recover(unit.runtime, len(self.exit_names), sum(ev.reclaimed_buffers for ev in unit.restarts))
        t_reclaimed = time.monotonic()
        self._spawn(unit)
        deadline = time.monotonic() + 5.0
        while not unit.line.ready and time.monotonic() < deadline and unit.child is not None \
                and unit.child.poll() is None:
            time.sleep(0.001)
        event = restart_event(process=unit.index, nodes=[n.name for n in self.layout.nodes], code=code,
                              lost=found.held_lost, since=t0, replica=unit.index)
        unit.restarts.append(event)
        self._save(unit)
        log.warning("deployment %s: replica %d %s; restarted in %.0f ms (reclaim %.0f ms, start %.0f ms): "
                    "%d buffers reclaimed, %d packets lost in flight, %d frames of the Rx burst lost", self.req.name,
                    unit.index, event.exit_status, event.downtime_ms, (t_reclaimed - t0) * 1e3,
                    (time.monotonic() - t_reclaimed) * 1e3, found.reclaimed, found.held_lost, found.rx_lost)

    # -- scaling (see micronf.agent.replicascale) ----------------------------------------------
    def autoscale(self) -> None:
        """Every ``interval_s``: sample the input drops and the replicas' CPU time, carry out what the
        autoscaler decides (one target, the replicas: see ``micronf.agent.autoscaler``)."""
        spec = self.req.autoscale
        now = time.monotonic()
        if (not spec.enabled or self.state != "running" or self.input_paused
                or not self.sampler.due(now, spec.interval_s)):
            return
        sample = self.sampler.read(drops=input_drops([u.runtime.segment() for u in self.units]),
                                   cpu_s=[(u.line.pid, cpu_seconds(u.line.pid)) for u in self.units], now=now)
        for decision in self.autoscaler.decide(sample, now):
            self.apply(decision)

    def apply(self, d: Decision) -> None:
        """Add a replica (``d.action == "out"``) or remove the newest, resharding the others; a refusal
        is logged, and the cool-down starts either way."""
        taken = {u.cpu for u in self.units}
        free = [c for c in usable_cpus() if c not in taken]
        why = refusal(self.req, d.action, replicas=len(self.units), free_cpus=len(free))
        index = len(self.units) if d.action == "out" else len(self.units) - 1
        if why is None:
            try:
                if d.action == "out":
                    self._add(free[0])
                else:
                    self._remove()
            except (LaunchError, ZygoteError, OSError) as exc:
                why = str(exc)
        if why is not None:
            log.warning("deployment %s: cannot scale the replicas %s: %s", self.req.name, d.action, why)
            self.autoscaler.done(d, time.monotonic(), applied=False)
            return
        self.scale_events.append(ScaleEventInfo(at=time.time(), node=REPLICAS, instance=f"r{index}", action=d.action,
                                                reason=d.reason))
        for unit in self.units:
            self._save(unit)
        self.autoscaler.done(d, time.monotonic(), applied=True)
        log.info("deployment %s: replica r%d %s (%s); %d replicas", self.req.name, index,
                 "added" if d.action == "out" else "removed", d.reason, len(self.units))

    def _stop_step(self, unit: Replica) -> None:
        """Stop ``unit``'s process after its step in hand (a burst run to completion: nothing held)."""
        unit.line.request_stop()
        if unit.child is not None:
            unit.child.wait(timeout=RESHARD_TIMEOUT_S)
            unit.child.close()
            unit.child = None

    def _reshard(self, units: list[Replica]) -> None:
        """Restart ``units`` with their shard of the replicas there are now."""
        for unit in units:
            self._stop_step(unit)
            self._write_configs(unit)
            self._spawn(unit)
            self._wait_ready(unit, RESHARD_TIMEOUT_S)

    def _add(self, cpu: int) -> None:
        unit = self._unit(len(self.units), cpu)
        self.units.append(unit)
        try:
            self._create(unit)
        except BaseException:
            self.units.pop()
            unit.runtime.stop()
            unit.runtime.close()
            raise
        self._reshard(self.units[:-1])
        self._spawn(unit)
        self._wait_ready(unit, RESHARD_TIMEOUT_S)

    def _remove(self) -> None:
        unit = self.units.pop()
        self._stop_step(unit)
        self.retired.append(self._part(unit, retired=True))
        unit.runtime.stop()
        unit.runtime.close()
        self._reshard(self.units)

    # -- observation -------------------------------------------------------------------------
    def info(self) -> DeploymentInfo:
        nodes = [n.name for n in self.layout.nodes]
        procs = [ProcessInfo(index=u.index, nodes=nodes, pid=u.line.pid,
                             alive=u.child is not None and u.child.poll() is None, cpu=u.cpu,
                             policy=self.req.io_policy, restarts=len(u.restarts), replica=u.index)
                 for u in self.units]
        segments = self.segment_names
        return DeploymentInfo(
            name=self.req.name, segment=segments[0], segments=segments, mode="replicas",
            state="running" if self.state == "running" else "stopping", created_at=self.created_at,
            entry=self.req.graph.entry, nodes=nodes, exits=self.exit_names,
            outputs={k: str(v.backend.get("kind")) for k, v in self.req.outputs.items()}, processes=procs)

    def pause_input(self) -> bool:
        """Pause every replica after the step in hand (an Rx burst run to completion through every
        µNF and out): True once all confirmed."""
        self.input_paused = True  # for good: resharding would restart the replicas, input and all
        return not GraphRuntime.pause([u.line for u in self.units])

    def _part(self, unit: Replica, *, retired: bool = False) -> Part:
        hist = unit.runtime.segment().view("tx.hist", np.int64)
        return Part(index=unit.index, segment=unit.runtime.segment_name, cpu=unit.cpu,
                    stats=self._counters(unit).stats([]), hist=hist.tolist(), retired=retired)

    def stats(self) -> GraphStats:
        """The replicas' counters merged into one graph's, with each replica's (see ``mergestats``),
        those a scale-in removed included."""
        parts = [*(self._part(u) for u in self.units), *self.retired]
        return merge(self.req.name, parts, scale_events=self.scale_events,
                     restarts=[ev for p in parts for ev in p.stats.restarts])
