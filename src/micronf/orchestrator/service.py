"""The orchestrator service: SFC requests in, µNF graphs running on agents, state kept in SQLite.

:class:`Orchestrator` is what the northbound API (:mod:`micronf.orchestrator.api`) calls. For an
SFC request it composes the optimized µNF graph (:mod:`~micronf.orchestrator.compose`), chooses
pipelined, a mix or replicas for its agent's cores (:mod:`~micronf.orchestrator.arrange`), places it
(:mod:`~micronf.orchestrator.placement`), deploys every part on its agent through the agent's
southbound API, and records everything in the :class:`~micronf.orchestrator.store.Store`.

Crash safety: every state change is written *before* it is acted on. A deployment is stored as
``deploying`` (with the exact requests for its agents) before any agent is called, and becomes
``running`` only after every agent accepted it; a removal is stored as ``deleting`` before any
agent is asked to remove it, and the row goes only once every agent did. So whatever the
orchestrator was doing when it died, :meth:`Orchestrator.reconcile` on the next start finds the
intent in the store and finishes it:

=============================  ==============================================================
stored state                   reconcile
=============================  ==============================================================
deploying/running/unreachable  ask each agent; one that lost it (restarted) gets the stored
/retrying                      request again; unreachable: ``unreachable`` (retried later);
                               the agent refused the redeploy: ``retrying`` (retried with
                               back-off, 1 s doubling up to 60 s, also after an orchestrator
                               restart); all present: ``running``
deleting                       remove on every agent (already gone is fine), then forget it
failed                         nothing (the error stays readable; a new request replaces it)
=============================  ==============================================================

``failed`` is only for a request that never came up (it was rolled back); a deployment that ran
and that an agent lost is the operator's intent still, so reconcile keeps trying.

A failed deployment is rolled back on every agent already called, including the one that failed
when its reply does not prove it has nothing (a timeout), except when it answered 409: that
deployment is someone else's.

Agents are reached through anything with the agent core's methods
(:class:`micronf.api.protocol.AgentCore`): an :class:`~micronf.api.client.AgentClient` in
production, an in-process agent or a fake in tests. Both kinds of failure are understood: the
client's :class:`~micronf.api.client.AgentClientError` (``status`` None: unreachable) and the
core's :class:`~micronf.api.errors.AgentError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from pydantic import ValidationError

from micronf.api.client import AgentClient, AgentClientError, Token
from micronf.api.errors import AgentError
from micronf.api.httperrors import ApiError
from micronf.api.models import Conservation, DeployRequest, GraphStats
from micronf.api.protocol import AgentCore
from micronf.documents import SpecError
from micronf.orchestrator.arrange import Arrangement, arrange
from micronf.orchestrator.compose import compose
from micronf.orchestrator.costmodel import CostTable, load_table
from micronf.orchestrator.load import load_sources
from micronf.orchestrator.models import Composition
from micronf.orchestrator.northbound import (
    AgentRejectedError,
    AgentUnavailableError,
    DeployFailedError,
    InvalidSFCError,
    PlanReply,
    ReconcileAction,
    SFCCreate,
    SFCExistsError,
    SFCInfo,
    SFCNotFoundError,
    SFCStats,
    UNFStats,
)
from micronf.orchestrator.placement import (
    AgentRef,
    Candidate,
    NoAgentError,
    Part,
    PlacementError,
    Traffic,
    exit_outputs,
    place,
    target_cpus,
)
from micronf.orchestrator.store import Record, RecordExistsError, State, Store
from micronf.runtime.verdict import drop_counts
from micronf.validation import describe_validation_errors

log = logging.getLogger("micronf.orchestrator")
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0  # back-off of a redeploy the agent refused


# -- agent failures ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Failure:
    """An agent call's failure, whichever way the agent was reached (``status`` None: no reply)."""

    status: int | None
    kind: str
    detail: str


def _failure(exc: Exception) -> _Failure:
    if isinstance(exc, AgentClientError):
        return _Failure(exc.status, exc.kind, exc.detail)
    if isinstance(exc, AgentError):
        return _Failure(exc.status, exc.kind, str(exc))
    return _Failure(500, "internal", f"{type(exc).__name__}: {exc}")


def _as_api_error(agent: AgentRef, f: _Failure, doing: str) -> ApiError:
    msg = f"agent {agent.name} ({agent.url}) {doing}: {f.kind}: {f.detail}"
    if f.status is None:
        return AgentUnavailableError(msg)
    if f.status == 409:
        return SFCExistsError(msg)
    if 400 <= f.status < 500:
        return AgentRejectedError(msg)
    return DeployFailedError(msg)


Connect = Callable[[AgentRef], AgentCore]
PROBE_TIMEOUT_S = 1.5  # an agent's /health answers within 100 ms even while it deploys (issue 12)


def http_agent(agent: AgentRef, token: Token = None) -> AgentCore:
    """The default way to reach an agent: its HTTP API (deploys start processes: a long timeout),
    with its bearer ``token``. Its health probe is one attempt of at most :data:`PROBE_TIMEOUT_S`:
    an agent that accepts connections but never answers made ``/health`` (and every placement)
    wait 3 × 120 s; now it is reported unreachable within the probe's timeout."""
    return AgentClient(agent.url, timeout=120.0, retries=2, token=token, health_timeout=PROBE_TIMEOUT_S)


# -- the service ---------------------------------------------------------------------------------
class Orchestrator:
    """SFC deployments over a set of agents, with state in ``store`` (see the module docstring).

    ``connect`` makes the object that talks to one agent (default: :func:`http_agent`); it is
    called once per agent. ``costs`` is the cost table placement chooses by (default:
    :func:`~micronf.orchestrator.costmodel.load_table`'s). Create, delete and reconcile run one at
    a time; reads do not wait.
    """

    def __init__(self, store: Store, agents: Sequence[AgentRef], *, connect: Connect = http_agent,
                 costs: CostTable | None = None) -> None:
        if not agents:
            raise ValueError("an orchestrator needs at least one agent")
        self.store = store
        self.costs = costs or load_table()
        self.agents = list(agents)
        self._by_url = {a.url: a for a in self.agents}
        self._connect = connect
        self._clients: dict[str, AgentCore] = {}
        self._lifecycle = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry: dict[str, tuple[float, float]] = {}  # 'retrying' deployment -> (last delay, not before)

    def _client(self, url: str) -> AgentCore:
        if url not in self._clients:
            self._clients[url] = self._connect(self._by_url.get(url) or AgentRef.parse(url))
        return self._clients[url]

    def _agent(self, url: str) -> AgentRef:
        return self._by_url.get(url) or AgentRef.parse(url)

    # -- dry run and create ---------------------------------------------------------------------
    def plan(self, req: SFCCreate) -> PlanReply:
        """Compose, arrange and place, deploy nothing."""
        name, comp, parts, arrangement = self._prepare(req)
        return PlanReply(name=name, composition=comp, parts={p.agent.url: p.request for p in parts},
                         arrangement=arrangement)

    def _prepare(self, req: SFCCreate) -> tuple[str, Composition, list[Part], Arrangement]:
        try:
            bundle = load_sources(req.sfc, req.files)
            comp = compose(bundle)
        except SpecError as exc:
            raise InvalidSFCError(str(exc)) from None
        name = req.name or comp.sfc
        traffic = Traffic.model_validate(req.model_dump(include=set(Traffic.model_fields)))
        try:
            candidates = self.candidates()
            comp, arrangement = arrange(bundle, comp, target_cpus(comp.after, candidates, req.agent), self.costs,
                                        mode=req.mode, replicas=req.replicas)
            parts = place(comp.after, name, candidates, traffic, agent=req.agent, arrangement=arrangement.chosen)
            return name, comp, parts, arrangement
        except NoAgentError as exc:
            raise AgentUnavailableError(str(exc)) from None
        except PlacementError as exc:
            raise InvalidSFCError(str(exc)) from None
        except ValidationError as exc:
            raise InvalidSFCError(f"{describe_validation_errors(exc.errors())} (set `name` in the request to "
                                  "deploy under another name)") from None

    def candidates(self) -> list[Candidate]:
        """Every configured agent with its load (live processes), None for the unreachable ones.
        The agents are probed all at once: agents that do not answer cost one probe's timeout, not
        one each."""
        clients = [self._client(a.url) for a in self.agents]  # created here: not by two threads at once

        def load(agent: AgentRef, client: AgentCore) -> int | None:
            try:
                return client.health().processes_alive
            except Exception as exc:
                log.warning("agent %s: %s", agent.url, _failure(exc).detail)
                return None

        with ThreadPoolExecutor(max_workers=min(len(clients), 32), thread_name_prefix="micronf-probe") as pool:
            loads = list(pool.map(load, self.agents, clients))
        return [Candidate(a, n) for a, n in zip(self.agents, loads, strict=True)]

    def create(self, req: SFCCreate) -> SFCInfo:
        """Compose, place, store as ``deploying``, deploy every part; roll back all on any failure."""
        with self._lifecycle:
            name, comp, parts, _ = self._prepare(req)
            old = self.store.get(name)
            if old is not None:
                if old.state != "failed":
                    raise SFCExistsError(f"an SFC deployment named {name!r} exists ({old.state}); undeploy it first")
                self.store.delete(name)  # a failed one is replaced
            source = SFCCreate.model_validate(req.model_dump() | {"name": name}).model_dump_json()
            try:
                self.store.create(Record(name=name, source=source, composition=comp.model_dump_json(),
                                         state="deploying",
                                         parts={p.agent.url: p.request.model_dump_json() for p in parts}))
            except RecordExistsError:
                raise SFCExistsError(f"an SFC deployment named {name!r} exists") from None
            deployed: list[Part] = []
            for part in parts:
                try:
                    self._client(part.agent.url).deploy(part.request)
                except Exception as exc:
                    f = _failure(exc)
                    ambiguous = f.status is None or f.status >= 500
                    self._rollback(name, deployed + ([part] if ambiguous else []))
                    err = _as_api_error(part.agent, f, "did not deploy it")
                    self.store.set_state(name, "failed", f"{err} (rolled back)")
                    log.warning("deploy %s failed: %s", name, err)
                    raise err from None
                deployed.append(part)
            self.store.set_state(name, "running")
            return self.get(name)

    def _rollback(self, name: str, parts: Sequence[Part]) -> None:
        for part in parts:
            try:
                self._client(part.agent.url).remove(name)
            except Exception as exc:
                f = _failure(exc)
                if f.status != 404:
                    log.error("rollback of %s on %s failed: %s", name, part.agent.url, f.detail)

    # -- reads ----------------------------------------------------------------------------------
    def sfcs(self) -> list[SFCInfo]:
        """Every stored deployment."""
        return [_info(r) for r in self.store.records()]

    def get(self, name: str) -> SFCInfo:
        return _info(self._record(name))

    def _record(self, name: str) -> Record:
        rec = self.store.get(name)
        if rec is None:
            raise SFCNotFoundError(f"no SFC deployment named {name!r}")
        return rec

    def stats(self, name: str) -> SFCStats:
        """Per-µNF and per-SFC counters, from every agent running a part."""
        rec = self._record(name)
        graphs: dict[str, GraphStats] = {}
        for url in rec.parts:
            try:
                graphs[url] = self._client(url).stats(name)
            except Exception as exc:
                f = _failure(exc)
                if f.status == 404:
                    raise AgentUnavailableError(f"agent {url} does not run {name!r} (it restarted?); the "
                                                "orchestrator redeploys it at its next reconcile") from None
                raise _as_api_error(self._agent(url), f, "gave no stats") from None
        return _stats(rec, graphs)

    # -- delete ---------------------------------------------------------------------------------
    def delete(self, name: str) -> None:
        """Store ``deleting``, remove on every agent, forget it (an unreachable agent: retried later)."""
        with self._lifecycle:
            rec = self._record(name)
            self.store.set_state(name, "deleting", rec.error)
            self._finish_delete(rec)

    def _finish_delete(self, rec: Record) -> None:
        for url in rec.parts:
            try:
                self._client(url).remove(rec.name)
            except Exception as exc:
                f = _failure(exc)
                if f.status != 404:
                    err = _as_api_error(self._agent(url), f, "did not remove it")
                    self.store.set_state(rec.name, "deleting", f"{err} (retried at the next reconcile)")
                    raise err from None
        self.store.delete(rec.name)

    # -- reconcile ------------------------------------------------------------------------------
    def reconcile(self) -> list[ReconcileAction]:
        """Bring every stored deployment and its agents in line (see the module docstring)."""
        actions = []
        with self._lifecycle:
            for rec in self.store.records():
                if rec.state == "failed" or (rec.state == "retrying" and not self._retry_due(rec.name)):
                    continue
                action = self._reconcile_one(rec)
                if action is not None:
                    actions.append(action)
                    log.info("reconcile %s: %s (%s -> %s)", rec.name, action.action, action.before, action.after)
        return actions

    def _reconcile_one(self, rec: Record) -> ReconcileAction | None:
        if rec.state == "deleting":
            try:
                self._finish_delete(rec)
            except ApiError as exc:
                return ReconcileAction(name=rec.name, before="deleting", after="deleting", action=str(exc))
            return ReconcileAction(name=rec.name, before="deleting", after=None, action="removed")
        done: list[str] = []
        for url, body in rec.parts.items():
            client = self._client(url)
            try:
                client.deployment(rec.name)
                continue
            except Exception as exc:
                f = _failure(exc)
                if f.status != 404:
                    return self._mark(rec, "unreachable", f"agent {url}: {f.kind}: {f.detail}", "agent unreachable")
            try:
                client.deploy(DeployRequest.model_validate_json(body))
            except Exception as exc:
                f = _failure(exc)
                error = f"redeploy on {url}: {f.kind}: {f.detail}"
                if f.status is None:
                    return self._mark(rec, "unreachable", error, "redeploy failed")
                delay = self._back_off(rec.name)
                return self._mark(rec, "retrying", f"{error} (retry in {delay:g} s)", "redeploy failed")
            done.append(url)
        if done:
            return self._mark(rec, "running", None, f"redeployed on {', '.join(done)} (the agent had lost it)")
        if rec.state != "running":
            return self._mark(rec, "running", None, "every agent runs it")
        return None

    def _retry_due(self, name: str) -> bool:
        """True when a 'retrying' deployment's back-off has passed (at once after a restart)."""
        return time.monotonic() >= self._retry.get(name, (0.0, 0.0))[1]

    def _back_off(self, name: str) -> float:
        """Schedule the next retry of ``name``: 1 s after the first failure, doubling up to 60 s."""
        last = self._retry.get(name, (0.0, 0.0))[0]
        delay = min(RETRY_MAX_S, last * 2 if last else RETRY_FIRST_S)
        self._retry[name] = (delay, time.monotonic() + delay)
        return delay

    def _mark(self, rec: Record, state: State, error: str | None, action: str) -> ReconcileAction:
        if state != "retrying":
            self._retry.pop(rec.name, None)
        self.store.set_state(rec.name, state, error)
        return ReconcileAction(name=rec.name, before=rec.state, after=state, action=action)

    # -- background reconcile -------------------------------------------------------------------
    def start(self, interval_s: float) -> None:
        """Reconcile every ``interval_s`` seconds in a daemon thread (retries unreachable agents,
        redeploys what a restarted agent lost) until :meth:`close`."""
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.reconcile()
                except Exception:
                    log.exception("reconcile failed")

        self._thread = threading.Thread(target=loop, name="micronf-reconcile", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the background reconcile and close the agent clients (deployments keep running)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for client in self._clients.values():
            close = getattr(client, "close", None)
            if callable(close):
                close()

    @contextmanager
    def running(self, interval_s: float) -> Iterator[Orchestrator]:
        """``reconcile()`` now, reconcile in the background, :meth:`close` at the end."""
        self.reconcile()
        self.start(interval_s)
        try:
            yield self
        finally:
            self.close()


@lru_cache(maxsize=64)
def _composition(text: str) -> tuple[Composition, dict[str, str | None]]:
    """A stored composition, parsed, with its exits -> SFC outputs (cached: stats are polled)."""
    comp = Composition.model_validate_json(text)
    return comp, exit_outputs(comp.after)


def _info(rec: Record) -> SFCInfo:
    comp, exits = _composition(rec.composition)
    reqs = [DeployRequest.model_validate_json(body) for body in rec.parts.values()]
    graph = reqs[0].graph if len(reqs) == 1 else comp.after.spec
    outputs = {out: [x for x, o in exits.items() if o == out] for out in comp.after.outputs}
    return SFCInfo(name=rec.name, sfc=comp.sfc, state=rec.state, error=rec.error, created_at=rec.created_at,
                   updated_at=rec.updated_at, agents=list(rec.parts), graph=graph, outputs=outputs,
                   rewrites=comp.rewrites, mode=reqs[0].mode, replicas=reqs[0].replicas)


def _stats(rec: Record, graphs: dict[str, GraphStats]) -> SFCStats:
    _comp, output_of = _composition(rec.composition)
    outputs: dict[str, int] = {}
    drops: dict[str, int] = {}
    unfs: dict[str, UNFStats] = {}
    cons = Conservation(rx=0, tx=0, dropped=0, in_flight=0, ok=True)
    for url, g in graphs.items():
        cpus = {n.name: n.cpu for n in DeployRequest.model_validate_json(rec.parts[url]).graph.nodes}
        for exit_name, t in g.tx.items():
            key = output_of.get(exit_name) or exit_name
            outputs[key] = outputs.get(key, 0) + t.get("frames", 0)
        for k, v in g.drops.items():
            drops[k] = drops.get(k, 0) + v
        c = g.conservation
        cons = Conservation(rx=cons.rx + c.rx, tx=cons.tx + c.tx, dropped=cons.dropped + c.dropped,
                            in_flight=cons.in_flight + c.in_flight, ok=cons.ok and c.ok)
        for n in g.nodes:
            base = n.instance_of or n.name
            rt = n.runtime
            own = {r: c for r, c in drop_counts(n.verdicts).items() if c}
            own |= {k: rt.get(k, 0) for k in ("unconnected", "full", "bad_verdict") if rt.get(k, 0)}
            s = UNFStats(name=base, type=n.type, agent=url, cpu=cpus.get(base), instances=1,
                         packets_in=rt.get("rx", 0), packets_out=rt.get("tx", 0),
                         dropped=sum(own.values()), drops=own,
                         ring_occupancy=sum(i.occupancy for i in n.ingress),
                         ring_capacity=sum(i.capacity for i in n.ingress), cycles=rt.get("cycles", 0))
            have = unfs.get(base)
            unfs[base] = s if have is None else _add(have, s)
    last = list(graphs.values())[-1]
    return SFCStats(name=rec.name, state=rec.state, at=max(g.at for g in graphs.values()),
                    packets_in=sum(g.rx.get("accepted", 0) for g in graphs.values()),
                    packets_out=sum(outputs.values()), outputs=outputs, drops=drops, latency=last.latency,
                    conservation=cons, unfs=list(unfs.values()), graphs=graphs)


def _add(a: UNFStats, b: UNFStats) -> UNFStats:
    """Two instances of one µNF as one row."""
    drops = dict(a.drops)
    for k, v in b.drops.items():
        drops[k] = drops.get(k, 0) + v
    return a.model_copy(update={
        "instances": a.instances + b.instances, "packets_in": a.packets_in + b.packets_in,
        "packets_out": a.packets_out + b.packets_out, "dropped": a.dropped + b.dropped, "drops": drops,
        "ring_occupancy": a.ring_occupancy + b.ring_occupancy, "ring_capacity": a.ring_capacity + b.ring_capacity,
        "cycles": a.cycles + b.cycles})
