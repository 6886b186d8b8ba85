"""The agent: every graph deployed on this machine, and the thread that keeps them healthy.

One ``Agent`` per machine (``micronf agent`` serves it over HTTP, see ``micronf.agent.server``).
It validates and deploys graphs (:class:`~micronf.agent.deployment.Deployment`: all or nothing),
removes them, reports them, and runs one monitor thread that calls every deployment's
supervision (restart dead processes) every ``tick_s`` and its autoscaler at the deployment's own
interval. Deploy and remove are serialized with the monitor by one lock, so the monitor never
looks at a half-built or half-removed graph.

Every agent has an identity (``Agent.id``, see :mod:`micronf.agent.identity`), part of the name
of every segment it creates (``mnf-<id>-<deployment>``): two agents on one machine can deploy
the same name.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from micronf import __version__
from micronf.agent.deployment import Deployment
from micronf.agent.errors import DeploymentExistsError, DeploymentNotFoundError
from micronf.agent.files import confine
from micronf.agent.identity import check_identity, random_identity
from micronf.agent.models import DeploymentInfo, DeployRequest, GraphStats, Health
from micronf.statedir import agent_data_dir

log = logging.getLogger("micronf.agent")


class Agent:
    """The per-machine agent (thread-safe; use as a context manager or call :meth:`close`).

    ``data_dir``: the only directory capture files of a request may be in (created 0700 when a
    request first names a file; default :func:`micronf.statedir.agent_data_dir`), see
    :mod:`micronf.agent.files`.
    """

    def __init__(self, *, tick_s: float = 0.05, monitor: bool = True, agent_id: str | None = None,
                 data_dir: Path | None = None) -> None:
        self.id = check_identity(agent_id) if agent_id is not None else random_identity()
        self.started = time.monotonic()
        self.data_dir = agent_data_dir() if data_dir is None else data_dir
        self._deployments: dict[str, Deployment] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.tick_s = tick_s
        self._thread: threading.Thread | None = None
        if monitor:
            self._thread = threading.Thread(target=self._monitor, name="micronf-agent-monitor", daemon=True)
            self._thread.start()

    def _monitor(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                for dep in list(self._deployments.values()):
                    try:
                        dep.supervise()
                        dep.autoscale()
                    except Exception:  # a bug here must not stop supervision of the other graphs
                        log.exception("deployment %s: monitor step failed", dep.req.name)

    def _get(self, name: str) -> Deployment:
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
                dep = Deployment(confined, agent_id=self.id)
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

    def health(self) -> Health:
        """Without the lock: a deployment starting holds it for seconds, and a liveness probe must
        not wait that long (the snapshot of the running deployments is taken atomically)."""
        deployments = list(self._deployments.values())
        procs = [p for d in deployments for p in d.info().processes]
        return Health(status="ok", version=__version__, uptime_s=time.monotonic() - self.started,
                      deployments=len(deployments), processes=len(procs),
                      processes_alive=sum(p.alive for p in procs))

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
