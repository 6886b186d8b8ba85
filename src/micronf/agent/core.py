"""The agent: every graph deployed on this machine, and the thread that keeps them healthy.

One ``Agent`` per machine (``micronf agent`` serves it over HTTP, see ``micronf.agent.server``).
It validates and deploys graphs (:class:`~micronf.agent.deployment.Deployment`, or for mode
``replicas`` :class:`~micronf.agent.replicas.ReplicatedDeployment`: all or nothing),
removes them, reports them, and runs one monitor thread that calls every deployment's
supervision (restart dead processes) every ``tick_s`` and its autoscaler at the deployment's own
interval. Deploy and remove are serialized with the monitor by one lock, so the monitor never
looks at a half-built or half-removed graph.

Every agent has an identity (``Agent.id``, see :mod:`micronf.agent.identity`), part of the name
of every segment it creates (``mnf-<id>-<deployment>``): two agents on one machine can deploy
the same name.

What survives what (``detached=True``, as ``micronf agent`` runs): a graph's processes do not
depend on the agent. Its zygote runs in its own session and its µNF, Rx and Tx processes get no
death signal, so when the agent dies (kill -9, a crash, an upgrade) they keep forwarding; only the
zygote exits (restarts wait for the next agent). A new agent (``adopt=True``) scans the segments:
one whose creator is dead and which live processes still map is adopted — the request, the
layout, the pids and the restart events are read back from it (:meth:`Deployment.adopt`), it
becomes the owner, starts a new zygote and resumes supervision, stats and autoscaling; one nobody
maps any more is removed; one that cannot be read back is stopped (its processes) and removed,
never left running. A replicated deployment's segments (``mnf-<id>-<name>.r<i>``) are adopted
together, as long as one of them is still mapped (a replica that died meanwhile is restarted).
Embedded use (``micronf run``) keeps the default ``detached=False``: the graphs end with the
process, even on kill -9 (see ``micronf.runtime.zygote``).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from micronf import __version__
from micronf.agent.build import SEGMENT_PREFIX
from micronf.agent.deployment import Deployment
from micronf.agent.files import confine
from micronf.agent.identity import check_identity, random_identity
from micronf.agent.replicas import ReplicatedDeployment, base_segment
from micronf.api.errors import DeploymentExistsError, DeploymentNotFoundError
from micronf.api.models import DeploymentInfo, DeployRequest, GraphStats, Health
from micronf.api.statedir import agent_data_dir
from micronf.dataplane.segment import Segment, SegmentInfo, list_segments, segment_users, stop_processes

log = logging.getLogger("micronf.agent")

AnyDeployment = Deployment | ReplicatedDeployment


class Agent:
    """The per-machine agent (thread-safe; use as a context manager or call :meth:`close`).

    ``data_dir``: the only directory capture files of a request may be in (created 0700 when a
    request first names a file; default :func:`micronf.api.statedir.agent_data_dir`), see
    :mod:`micronf.agent.files`. ``detached``/``adopt``: see the module docstring.
    """

    def __init__(self, *, tick_s: float = 0.05, monitor: bool = True, agent_id: str | None = None,
                 data_dir: Path | None = None, detached: bool = False, adopt: bool = False) -> None:
        self.id = check_identity(agent_id) if agent_id is not None else random_identity()
        self.started = time.monotonic()
        self.data_dir = agent_data_dir() if data_dir is None else data_dir
        self._deployments: dict[str, AnyDeployment] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.tick_s = tick_s
        self.detached = detached
        self._thread: threading.Thread | None = None
        if adopt:
            self.adopt_running()
        if monitor:
            self._thread = threading.Thread(target=self._monitor, name="micronf-agent-monitor", daemon=True)
            self._thread.start()

    def _monitor(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.tick()

    def tick(self) -> None:
        """One step of the monitor, now: every deployment's supervision, then its autoscaler (the monitor
        thread calls this every ``tick_s``; with ``monitor=False`` the caller does)."""
        with self._lock:
            for dep in list(self._deployments.values()):
                try:
                    dep.supervise()
                    dep.autoscale()
                except Exception:  # a bug here must not stop supervision of the other graphs
                    log.exception("deployment %s: monitor step failed", dep.req.name)

    def adopt_running(self) -> list[str]:
        """Adopt every graph left running by an agent that is gone; remove what cannot be adopted
        (see the module docstring). Returns the names of the deployments adopted."""
        adopted = []
        with self._lock:
            ours = f"{SEGMENT_PREFIX}{self.id}-"  # another agent's graphs are that agent's to adopt
            stale = [i for i in list_segments() if i.valid and not i.owner_alive and i.name.startswith(ours)]
            users = segment_users(i.path for i in stale)
            groups: dict[str, list[SegmentInfo]] = {}  # a replicated deployment: one segment per replica
            for info in stale:
                groups.setdefault(base_segment(info.name), []).append(info)
            for infos in groups.values():
                alive = {info.name: {u.pid for u in users[info.path]} for info in infos}
                if not any(alive.values()):
                    for info in infos:
                        log.warning("segment %s: left by pid %d, no process maps it any more: removed", info.name,
                                    info.owner_pid)
                        info.path.unlink(missing_ok=True)
                    continue
                dep = self._adopt(infos, alive)
                if dep is not None:
                    self._deployments[dep.req.name] = dep
                    adopted.append(dep.req.name)
        return adopted

    def _adopt(self, infos: list[SegmentInfo], alive: dict[str, set[int]]) -> AnyDeployment | None:
        """Adopt the graph of the segments ``infos`` (one, or a replicated graph's, whose replica
        segments nobody maps any more are adopted too: their replicas are restarted); ``alive``: the
        pids mapping each; or stop and remove it."""
        segs: list[Segment] = []
        try:
            segs = [Segment.attach(info.name) for info in infos]
            dep: AnyDeployment
            if len(infos) == 1 and infos[0].name == base_segment(infos[0].name):
                dep = Deployment.adopt(segs[0], alive[infos[0].name], agent_id=self.id, detached=self.detached)
            else:
                dep = ReplicatedDeployment.adopt([(seg, alive[seg.name]) for seg in segs], agent_id=self.id,
                                                 detached=self.detached)
        except Exception as exc:  # whatever is unreadable in it: it must not be left running
            pids = set().union(*alive.values())
            log.error("segments %s: cannot adopt their graph (%s): stopping its %d processes and removing them",
                      ", ".join(i.name for i in infos), exc, len(pids))
            stop_processes(pids)
            for seg in segs:
                seg.close()
            for info in infos:
                info.path.unlink(missing_ok=True)
            return None
        log.info("deployment %s: adopted from segments %s (left by pid %d), %d processes running", dep.req.name,
                 ", ".join(i.name for i in infos), infos[0].owner_pid, dep.running())
        return dep

    def _clear_stale_segment(self, dep: AnyDeployment) -> None:
        """Before creating ``dep``'s segments: one of such a name left by a dead creator is removed when
        no process maps it (never under a running graph: that one is adopted at start)."""
        names = set(dep.segment_names)
        for info in list_segments():
            if info.name not in names or not info.valid or info.owner_alive:
                continue
            users = segment_users([info.path])[info.path]
            if users:
                pids = ", ".join(str(u.pid) for u in users)
                raise DeploymentExistsError(f"segment {info.name!r} is still used by processes {pids} (their agent "
                                            f"is gone; `micronf shm gc --kill` stops them)")
            log.warning("segment %s: left by pid %d, removed before deploying again", info.name, info.owner_pid)
            info.path.unlink(missing_ok=True)

    def _get(self, name: str) -> AnyDeployment:
        dep = self._deployments.get(name)
        if dep is None:
            known = ", ".join(sorted(self._deployments)) or "none"
            raise DeploymentNotFoundError(f"no deployment named {name!r} (deployed: {known})")
        return dep

    def deploy(self, req: DeployRequest) -> DeploymentInfo:
        """Start ``req``'s graph with its Rx/Tx services; all of it comes up or none of it stays."""
        with self._lock:
            if req.name in self._deployments:
                raise DeploymentExistsError(f"a deployment named {req.name!r} is already running; remove it first")
            t0 = time.monotonic()
            with confine(req, self.data_dir) as confined:  # capture files: inside the data directory
                dep: AnyDeployment = (ReplicatedDeployment if req.mode == "replicas" else Deployment)(
                    confined, agent_id=self.id, detached=self.detached)
                self._clear_stale_segment(dep)
                dep.start()
            self._deployments[req.name] = dep
            log.info("deployment %s: %d µNFs up in %.2f s", req.name, len(req.graph.nodes), time.monotonic() - t0)
            return dep.info()

    def remove(self, name: str) -> None:
        with self._lock:
            dep = self._get(name)
            dep.stop()
            del self._deployments[name]
            log.info("deployment %s: removed", name)

    def deployments(self) -> list[DeploymentInfo]:
        with self._lock:
            return [d.info() for d in self._deployments.values()]

    def deployment(self, name: str) -> DeploymentInfo:
        with self._lock:
            return self._get(name).info()

    def stats(self, name: str) -> GraphStats:
        with self._lock:
            return self._get(name).stats()

    def pause_input(self, name: str) -> bool:
        """Stop deployment ``name``'s input and let it drain (see :meth:`Deployment.pause_input`)."""
        with self._lock:
            return self._get(name).pause_input()

    def health(self) -> Health:
        """Without the lock: a deployment starting holds it for seconds, and a liveness probe must
        not wait that long (the snapshot of the running deployments is taken atomically)."""
        deployments = list(self._deployments.values())
        procs = [p for d in deployments for p in d.info().processes]
        return Health(status="ok", version=__version__, uptime_s=time.monotonic() - self.started,
                      deployments=len(deployments), processes=len(procs),
                      processes_alive=sum(p.alive for p in procs))

    def leave_running(self) -> list[str]:
        """Stop the monitor and let go of every deployment without stopping it (an agent upgrade:
        the graphs keep forwarding and the next agent adopts them). Only for a ``detached`` agent;
        returns the names left running."""
        if not self.detached:
            raise RuntimeError("only a detached agent's graphs can outlive it")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            names = list(self._deployments)
            for name in names:
                self._deployments.pop(name).leave_running()
                log.info("deployment %s: left running for the next agent", name)
        return names

    def close(self) -> None:
        """Stop the monitor and remove every deployment."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for name in list(self._deployments):
                try:
                    self._deployments.pop(name).stop()
                except Exception:
                    log.exception("deployment %s: stop failed", name)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
