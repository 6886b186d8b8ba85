"""One deployed graph on this agent: its µNF processes, its Rx/Tx services, supervision and scaling.

``Deployment.start()`` plans the graph, creates its segment (pool, rings, counters, I/O regions;
mode 0600), starts the graph's zygote, forks the µNFs and then the Tx and Rx services, and waits
until all are ready; any failure tears everything down again (nothing left running, no segment)
and raises with the reason — including the text a service wrote before dying (e.g. "no such
interface"). ``tick()`` is called by the agent's monitor thread every few tens of ms:

- supervision: a dead process (µNF or service) is restarted: pause the others, reclaim the
  buffers the dead one held (``reclaim``), fork it again from the zygote (milliseconds), resume.
  Each restart is an event with the exit status, the buffers reclaimed and the downtime.
- autoscaling (§IV-E): every interval, the counters are sampled and the autoscaler decides
  (``micronf.agent.autoscaler``: drops into a µNF in a row scale it out, lasting low load scales
  it back in, a cool-down after each decision); the deployment carries the decisions out with
  ``micronf.runtime.scaling`` (a new instance, its upstream egress becomes LoadBalanced, by flow
  by default).
- stats: ``stats()`` reads the counters through :class:`~micronf.agent.stats.GraphCounters`.

The segment is the deployment's source of truth (``agent.record``: the request, the calibration, the
restart events so far; the layout and every process's pid; the services' own configs):
:meth:`Deployment.adopt` rebuilds a deployment from it when a new agent takes over graphs that kept running without one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from micronf.agent.autoscaler import Autoscaler, Decision, Sampler
from micronf.agent.build import (
    SEGMENT_PREFIX,
    new_runtime,
    read_record,
    restart_event,
    save_record,
    validated_layout,
    write_service_configs,
)
from micronf.agent.stats import GraphCounters
from micronf.api.errors import DeploymentFailedError, InvalidDeploymentError
from micronf.api.models import (
    DeploymentInfo,
    DeployRequest,
    GraphStats,
    ProcessInfo,
    RestartEventInfo,
    ScaleEventInfo,
)
from micronf.dataplane import reclaim as reclaim_kernels
from micronf.dataplane.control import ControlLine
from micronf.dataplane.reclaim import complete_sync_marks, reclaim
from micronf.dataplane.ring import HEAD
from micronf.dataplane.segment import Segment
from micronf.ports.base import EG_BRANCH, IN_SYNC
from micronf.runtime.launch import LaunchError
from micronf.runtime.scaling import scale_in, scale_out
from micronf.runtime.zygote import Child, ZygoteError
from micronf.services.iomem import (
    RX_INDEX,
    TX_INDEX,
    TX_WORDS,
    calibrate_ns_per_cycle,
    read_error,
)

log = logging.getLogger("micronf.agent")

RX_SLOT, TX_SLOT = 0, 1
RX_STAGE, TX_STAGE = "micronf.services.rx", "micronf.services.tx"  # run by the runtime's process runner

class Deployment:
    """A graph deployed on this machine (see the module docstring)."""

    def __init__(self, req: DeployRequest, *, agent_id: str, detached: bool = False) -> None:
        self.req = req
        self.created_at = time.time()
        self.state: str = "running"
        self.restarts: list[RestartEventInfo] = []
        self.restart_count: dict[int, int] = {}
        self.sampler = Sampler()
        self.autoscaler = Autoscaler(req.autoscale)
        self.scale_events: list[ScaleEventInfo] = []
        layout, self.exit_names = validated_layout(req, req.graph)
        self.runtime = new_runtime(req, layout, f"{SEGMENT_PREFIX}{agent_id}-{req.name}", preload=(RX_STAGE, TX_STAGE),
                                   detached=detached)
        self.services: list[Child | None] = [None, None]
        self.ns_per_cycle = 1.0

    @property
    def segment_names(self) -> list[str]:
        return [self.runtime.segment_name]

    def running(self) -> int:
        """How many of its processes run."""
        return sum(c is not None and c.poll() is None for c in [*self.runtime.procs, *self.services])

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        g = self.runtime
        try:
            g.create()
            reclaim_kernels.warm()
            self.ns_per_cycle = calibrate_ns_per_cycle()
            self._save()
            write_service_configs(g.segment(), self.req, self.exit_names, self.ns_per_cycle)
            g.start(timeout)
            self._start_service(TX_SLOT)  # the exits drain before the first frame enters
            self._wait_services(timeout, (TX_SLOT,))
            self._start_service(RX_SLOT)
            self._wait_services(timeout, (RX_SLOT,))
        except (LaunchError, ZygoteError, OSError) as exc:
            why = read_error(g.segment()) if g.seg is not None else ""
            self.stop()
            raise DeploymentFailedError(f"deployment {self.req.name!r} did not start: {why or exc}") from None

    def _save(self) -> None:
        """Store in the segment what a new agent needs to adopt this deployment (see ``build.save_record``)."""
        save_record(self.runtime.segment(), self.req, ns_per_cycle=self.ns_per_cycle, created_at=self.created_at,
                    restarts=self.restarts)

    @classmethod
    def adopt(cls, seg: Segment, alive: set[int], *, agent_id: str, detached: bool = True) -> Deployment:
        """The deployment running from ``seg`` since an earlier agent (see the module docstring);
        ``alive``: the pids that map the segment. Raises if the segment cannot be read back."""
        rec = read_record(seg)
        dep = cls(rec.req, agent_id=agent_id, detached=detached)
        if dep.runtime.segment_name != seg.name:
            raise InvalidDeploymentError(f"segment {seg.name!r} does not hold deployment {dep.req.name!r}")
        dep.created_at, dep.ns_per_cycle, dep.restarts = rec.created_at, rec.ns_per_cycle, rec.restarts
        for ev in dep.restarts:
            dep.restart_count[ev.process] = dep.restart_count.get(ev.process, 0) + 1
        io = dep.runtime.adopt(seg, alive)
        dep.services = [io[RX_SLOT], io[TX_SLOT]]
        return dep

    def _start_service(self, slot: int) -> None:
        g = self.runtime
        if slot == RX_SLOT:
            child = g.spawn_io(slot, RX_STAGE)
        else:
            child = g.spawn_io(slot, TX_STAGE, str(g.io_client_base + slot))
        if self.services[slot] is not None:
            self.services[slot].close()  # type: ignore[union-attr]
        self.services[slot] = child

    def _wait_services(self, timeout: float, slots: tuple[int, ...]) -> None:
        deadline = time.monotonic() + timeout
        for slot in slots:
            child = self.services[slot]
            assert child is not None
            while not self.runtime.io_line(slot).ready:
                code = child.poll()
                if code is not None or time.monotonic() > deadline:
                    name = "Rx" if slot == RX_SLOT else "Tx"
                    raise LaunchError(f"the {name} service exited with status {code}" if code is not None
                                      else f"the {name} service did not become ready")
                time.sleep(0.002)

    def stop(self) -> None:
        """Stop every process and remove the segment (idempotent)."""
        self.state = "stopping"
        g = self.runtime
        if g.mem is not None:
            for slot in (RX_SLOT, TX_SLOT):  # input first, so the µNFs drain
                g.io_line(slot).request_stop()
        for child in self.services:
            if child is not None:
                try:
                    child.wait(timeout=10)
                except Exception:
                    child.kill()
                child.close()
        self.services = [None, None]
        g.stop()
        g.close()

    def leave_running(self) -> None:
        """Let go of the graph without stopping it: end the zygote (its processes live on), close
        this agent's handles; the segment stays for the next agent to adopt."""
        self.state = "stopping"
        g = self.runtime
        for child in [*g.procs, *self.services]:
            if child is not None:
                child.close()
        if g.zygote is not None:
            g.zygote.close()
            g.zygote = None
        if g.seg is not None:
            g.seg.close()

    # -- supervision -------------------------------------------------------------------------
    def _live_lines(self, skip: ControlLine) -> list[ControlLine]:
        g = self.runtime
        lines = [g.line(k) for k, plan_ in enumerate(g.layout.processes)
                 if not all(g.layout.nodes[i].retired for i in plan_.nodes)]
        lines += [g.io_line(s) for s in (RX_SLOT, TX_SLOT)]
        return [ln for ln in lines if ln.slot != skip.slot]

    def supervise(self) -> None:
        """Restart every process that died, and the zygote (see the module docstring)."""
        if self.state != "running":
            return
        g = self.runtime
        if g.zygote is not None and not g.zygote.alive:
            # start the next one now, not when a process dies and would wait seconds for it
            log.warning("deployment %s: the zygote exited; starting a new one", self.req.name)
            g.ensure_zygote()
        for k, child in enumerate(list(g.procs)):
            retired = all(g.layout.nodes[i].retired for i in g.layout.processes[k].nodes)
            code = child.poll()
            if code is not None and not retired:
                self._restart(g.line(k), code, [g.layout.nodes[i].name for i in g.layout.processes[k].nodes],
                              partial(g.restart_process, k))
        for slot, svc in enumerate(self.services):
            if svc is None:
                continue
            code = svc.poll()
            if code is not None:
                self._restart(g.io_line(slot), code, ["@rx" if slot == RX_SLOT else "@tx"],
                              partial(self._respawn_service, slot))

    def _respawn_service(self, slot: int) -> Child:
        self._start_service(slot)
        child = self.services[slot]
        assert child is not None
        return child

    def _restart(self, line: ControlLine, code: int, nodes: list[str], respawn: Callable[[], Child]) -> None:
        g = self.runtime
        mem = g.memory()
        t0 = time.monotonic()
        others = self._live_lines(skip=line)
        stuck = g.pause(others)
        t_paused = time.monotonic()
        try:
            p, rctrl, rslots = mem.pool.arrays, mem.rings.ctrl, mem.rings.slots
            self._complete_syncs()
            # buffers the dead process had already counted (as dropped, or as sent by the Tx service)
            # are not lost in the crash too
            unfreed = g.counted_unfreed() if not stuck else []
            tx_unfreed = self._tx_counted_unfreed() if not stuck else 0
            reclaimed = reclaim(p, rctrl, rslots) - sum(unfreed) - tx_unfreed if not stuck else 0
            g.settle(unfreed)
            g.io_line(TX_SLOT).settle(tx_unfreed)
            t_reclaimed = time.monotonic()
            child = respawn()
            deadline = time.monotonic() + 5.0
            while not line.ready and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.001)
        finally:
            g.resume(others)
        phases = (f"pause {(t_paused - t0) * 1e3:.0f} ms, reclaim {(t_reclaimed - t_paused) * 1e3:.0f} ms, "
                  f"start {(time.monotonic() - t_reclaimed) * 1e3:.0f} ms")
        index = line.slot
        self.restart_count[index] = self.restart_count.get(index, 0) + 1
        event = restart_event(process=index, nodes=nodes, code=code, lost=reclaimed, since=t0)
        self.restarts.append(event)
        self._save()
        log.warning("deployment %s: %s %s; restarted in %.0f ms (%s), %d buffers reclaimed%s", self.req.name,
                    "/".join(nodes), event.exit_status, event.downtime_ms, phases, reclaimed,
                    f" (processes {stuck} did not pause: no reclaim)" if stuck else "")

    def _tx_counted_unfreed(self) -> int:
        """Buffers the Tx service counted (sent, refused, no output) but did not yet free.

        The Tx service counts a batch, then frees its buffers through its return ring: the counts
        minus that ring's head (minus what earlier restarts settled) is 0 between batches, and for a
        killed service exactly the counted part of the buffers it held. Those were counted as done
        already; a restart's reclaim frees them without counting them again as ``lost_in_crash``
        (the µNF processes' equivalent is ``GraphRuntime.counted_unfreed``)."""
        g = self.runtime
        mem = g.memory()
        txv = g.segment().view("tx.stats", np.int64).reshape(-1, TX_WORDS)[: len(self.exit_names)]
        counted = int(txv[:, [TX_INDEX["frames"], TX_INDEX["refused"], TX_INDEX["no_output"]]].sum())
        freed = int(mem.pool.arrays.ret_ctrl[g.io_client_base + TX_SLOT, HEAD])
        return counted - freed - g.io_line(TX_SLOT).settled

    def _complete_syncs(self) -> None:
        g = self.runtime
        mem = g.memory()
        for node in g.layout.nodes:
            for ing in node.ingress:
                if ing.kind != IN_SYNC:
                    continue
                branch_rings = [r for m in g.layout.nodes for e in m.egress if e.kind == EG_BRANCH for r in e.rings]
                complete_sync_marks(mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, ing.ring, ing.need,
                                    np.array(branch_rings, dtype=np.int64))

    # -- autoscaling -------------------------------------------------------------------------
    def autoscale(self) -> None:
        """Every ``interval_s``: sample the counters and carry out what the autoscaler decides."""
        spec = self.req.autoscale
        now = time.monotonic()
        if not spec.enabled or self.state != "running" or not self.sampler.due(now, spec.interval_s):
            return
        g = self.runtime
        entry_full = int(g.segment().view("rx.stats", np.int64)[RX_INDEX["entry_full"]])
        sample = self.sampler.read(g.layout, g.memory().runtime_counters, entry=self.req.graph.entry,
                                   entry_full=entry_full, ns_per_cycle=self.ns_per_cycle, now=now)
        for decision in self.autoscaler.decide(sample, now):
            self._scale(decision)

    def _scale(self, d: Decision) -> None:
        """Carry out ``d`` on the running graph and record it; a refusal (no spare slot, a µNF that cannot
        be replicated) is logged, and the µNF cools down either way."""
        try:
            inst = (scale_out(self.runtime, d.node, by_flow=self.req.autoscale.by_flow) if d.action == "out"
                    else scale_in(self.runtime, d.node))
        except LaunchError as exc:
            log.warning("deployment %s: cannot scale %s %s: %s", self.req.name, d.node, d.action, exc)
            self.autoscaler.done(d, time.monotonic(), applied=False)
            return
        self.scale_events.append(ScaleEventInfo(at=time.time(), node=d.node, instance=inst, action=d.action,
                                                reason=d.reason))
        self.autoscaler.done(d, time.monotonic(), applied=True)
        log.info("deployment %s: scaled %s %s (%s): %s", self.req.name, d.action, d.node, inst, d.reason)

    # -- observation -------------------------------------------------------------------------
    def info(self) -> DeploymentInfo:
        g = self.runtime
        procs = []
        for k, plan_ in enumerate(g.layout.processes):
            nodes = [g.layout.nodes[i] for i in plan_.nodes]
            if all(n.retired for n in nodes):
                continue
            procs.append(ProcessInfo(index=k, nodes=[n.name for n in nodes], pid=g.line(k).pid,
                                     alive=k < len(g.procs) and g.procs[k].poll() is None, cpu=plan_.cpu,
                                     policy=plan_.policy, restarts=self.restart_count.get(k, 0)))
        for slot, svc in enumerate(self.services):
            line = g.io_line(slot)
            procs.append(ProcessInfo(index=line.slot, nodes=["@rx" if slot == RX_SLOT else "@tx"],
                                     pid=line.pid, alive=svc is not None and svc.poll() is None,
                                     cpu=self.req.rx_cpu if slot == RX_SLOT else self.req.tx_cpu,
                                     policy=self.req.io_policy, restarts=self.restart_count.get(line.slot, 0)))
        return DeploymentInfo(
            name=self.req.name, segment=g.segment_name, segments=[g.segment_name],
            state="running" if self.state == "running" else "stopping",
            created_at=self.created_at, entry=self.req.graph.entry,
            nodes=[n.name for n in g.layout.nodes if not n.retired], exits=self.exit_names,
            outputs={k: str(v.backend.get("kind")) for k, v in self.req.outputs.items()}, processes=procs)

    def pause_input(self) -> bool:
        """Stop the graph's input: the Rx service pauses after the burst in hand (it holds no packet
        between bursts). True once it confirmed; the graph then only drains."""
        g = self.runtime
        return not g.pause([g.io_line(RX_SLOT)])

    def stats(self) -> GraphStats:
        """Every counter of the graph (read while packets move) and its conservation."""
        return GraphCounters(self.runtime, self.req, self.exit_names, self.restarts).stats(self.scale_events)
