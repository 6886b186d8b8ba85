"""Placement: which agent runs an SFC's µNF graph, on which cores, fed by what, sent where.

:func:`place` turns a :class:`~micronf.orchestrator.models.ComposedGraph` into one
:class:`~micronf.api.models.DeployRequest` per agent. The decisions, and why:

- **One agent per SFC graph.** The whole graph goes to the agent its placement hints name, or to
  an explicitly requested one, or else to the least loaded reachable agent (fewest live µNF
  processes; ties go to the first configured). Hints that name two agents are refused: splitting a
  graph across machines needs the Tx of one part to tag packets (NSH, RFC 8300) and the Rx of the
  next to steer them by that tag, which is not built yet. The result is still a list of parts
  (one today) so the service's deploy/rollback loop is already the multi-agent one.
- **Cores.** A µNF with a ``cpu`` hint is pinned there (it must be one of the agent's CPUs when
  those are known). The others, in graph order, are spread evenly over the agent's CPUs in
  contiguous blocks: with N µNFs and C CPUs, the k-th goes to CPU ``k*C//N``. With N <= C every
  µNF has its own core; with more µNFs than cores, *consecutive* µNFs share a core, which is the
  pairing §VI-E makes cheap: a µNF that finds its ring empty yields, and the upstream neighbour
  on the same core is the one that fills it. µNFs are not weighed by cost here; when an agent's
  CPUs are unknown, unhinted µNFs are not pinned (the OS places them).
- **Pipelined, replicas or a mix** is chosen before, by :mod:`~micronf.orchestrator.arrange` from
  the cost model (:mod:`~micronf.orchestrator.costmodel`); :func:`place` builds the request of
  its choice (without one: pipelined, as described here).
- **Fewer cores than µNFs: chain and fuse.** Then (:func:`cores_are_scarce`) :func:`fit_to_cores`
  composes the SFC again without parallel branches (a branch only pays off with a core of its own), and
  :func:`place` gives the Rx and Tx services the first CPU (a dedicated I/O core, as DPDK
  deployments do), spreads the µNFs over the others as above, and fuses each run of
  consecutive chained µNFs that share a core into one process, run to completion
  (``NodeSpec.cluster``). Why, measured on the 2-core test machine with the Fig. 11 SFC
  (``bench/sfc.py``, medians of 3): six µNF processes with Branch/Sync (``unf``) 0.39-0.53 Mpps;
  chained, fused in two processes with Rx beside the first and Tx beside the second
  (``unf-2proc-pinned``) 1.41-1.74; fused in one on CPU 1 with Rx and Tx on CPU 0
  (``unf-1proc-pinned``) 2.03-2.28. The µNFs stay separate µNFs (own counters, own verdicts,
  independently replaceable); only the process boundary between neighbours on one core goes.
  ``fuse=False`` keeps one process per µNF.
- **Traffic in and out.** The SFC file says nothing about packet I/O, so the request carries it
  (:class:`Traffic`): an optional Rx backend spec and rules (default: none, an idle graph), and
  outputs keyed by SFC output name (``appfw.web``: all its exits) or by exit name. Every exit
  without an output gets ``{"kind": "null"}``, so it is transmitted (counted) rather than drained
  as ``no_output``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from micronf.api.models import AutoscaleSpec, DeployRequest, OutputSpec
from micronf.orchestrator.compose import compose
from micronf.orchestrator.costmodel import Alternative
from micronf.orchestrator.load import SFCBundle
from micronf.orchestrator.models import ComposedGraph, Composition
from micronf.packet.rules import FlowRule
from micronf.runtime.graph import GraphSpec, label_exits
from micronf.runtime.nf import nf_class

NULL_OUTPUT = OutputSpec(backend={"kind": "null"})


class PlacementError(ValueError):
    """The graph cannot be placed as asked (conflicting hints, unknown agent, CPU, or output)."""


class NoAgentError(PlacementError):
    """The agent the graph must go to (or every agent) is unreachable."""


@dataclass(frozen=True)
class AgentRef:
    """A configured agent: its base URL, the name placement hints use, and the CPUs it offers."""

    url: str
    name: str
    cpus: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> AgentRef:
        """``[NAME=]URL[#cpus=LIST]``, e.g. ``edge=http://10.0.0.2:8771#cpus=2-3,6``.

        NAME defaults to the URL's ``host:port``. Without ``#cpus``, an agent on this machine
        (a loopback host) offers the CPUs this process may run on; a remote one's are unknown.
        """
        name, sep, rest = text.partition("=")
        if not sep or "://" in name:
            name, rest = "", text
        url, _, fragment = rest.partition("#")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"agent {text!r}: expected [NAME=]http://HOST:PORT[#cpus=LIST]")
        cpus: tuple[int, ...] | None = None
        if fragment:
            key, _, value = fragment.partition("=")
            if key != "cpus":
                raise ValueError(f"agent {text!r}: the only option after '#' is cpus=LIST, found {fragment!r}")
            cpus = parse_cpus(value)
        elif _is_loopback(parts.hostname):
            cpus = tuple(sorted(os.sched_getaffinity(0)))
        return cls(url=url.rstrip("/"), name=name or parts.netloc, cpus=cpus)


def parse_cpus(text: str) -> tuple[int, ...]:
    """``0-3,6`` -> ``(0, 1, 2, 3, 6)`` (the kernel's cpulist format)."""
    cpus: set[int] = set()
    try:
        for item in text.split(","):
            lo, _, hi = item.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"not a CPU list: {text!r} (expected e.g. 0-3,6)") from None
    if not cpus or min(cpus) < 0:
        raise ValueError(f"not a CPU list: {text!r} (expected e.g. 0-3,6)")
    return tuple(sorted(cpus))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Candidate:
    """An agent placement may choose, with its load (live µNF processes; None: unreachable)."""

    agent: AgentRef
    load: int | None


class Traffic(BaseModel):
    """What the SFC request does not say: where its packets come from and where each exit goes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rx: dict[str, Any] | None = Field(None, description='Rx backend spec, e.g. {"kind": "generator", "count": 1000} '
                                      "(None: no traffic, an idle graph)")
    rules: list[FlowRule] = Field(default_factory=list, description="5-tuple rules of the Rx service (empty: all)")
    outputs: dict[str, OutputSpec] = Field(
        default_factory=dict, description='per SFC output ("appfw.web") or exit name: where it goes '
        '(default for every exit: {"backend": {"kind": "null"}})')
    autoscale: AutoscaleSpec | None = Field(None, description="the agent's autoscaler (None: its defaults)")


@dataclass(frozen=True)
class Part:
    """The piece of an SFC one agent runs."""

    agent: AgentRef
    request: DeployRequest


def target_cpus(composed: ComposedGraph, candidates: Sequence[Candidate], agent: str | None = None
                ) -> tuple[int, ...] | None:
    """The CPUs of the agent :func:`place` will choose for ``composed`` (None: unknown)."""
    return _choose_agent(composed, candidates, agent).agent.cpus


def cores_are_scarce(composed: ComposedGraph, cpus: tuple[int, ...] | None) -> bool:
    """True when the agent offers fewer CPUs than ``composed`` has µNFs (see the module docstring)."""
    return cpus is not None and len(cpus) < len(composed.spec.nodes)


def fit_to_cores(bundle: SFCBundle, comp: Composition, cpus: tuple[int, ...] | None) -> Composition:
    """``comp`` (``bundle`` composed with parallel branches), or, when ``cpus`` (those of the agent
    the graph goes to) are scarce for it, ``bundle`` composed again without parallel branches: a
    branch pays off only with a core of its own, and :func:`place` then fuses the chain."""
    return compose(bundle, parallelize=False) if cores_are_scarce(comp.after, cpus) else comp


def pipelined_spec(composed: ComposedGraph, offered: tuple[int, ...] | None, fuse: bool | None = None
                   ) -> tuple[GraphSpec, int | None]:
    """``composed``'s spec with each µNF's CPU and fused cluster as a pipelined deployment runs it on
    an agent offering ``offered`` CPUs, and the CPU of its Rx and Tx services (None: unpinned); see
    the module docstring (``fuse``: as for :func:`place`)."""
    if cores_are_scarce(composed, offered) if fuse is None else fuse:
        io_cpu = offered[0] if offered else None
        cpus = _assign_cpus(composed, offered, spread=offered[1:] if offered and len(offered) > 1 else offered)
        clusters = _fuse_neighbours(composed, cpus)
    else:
        io_cpu = None
        cpus = _assign_cpus(composed, offered)
        clusters = dict.fromkeys(cpus)
    return composed.spec.model_copy(update={"nodes": [
        n.model_copy(update={"cpu": cpus[n.name], "cluster": clusters[n.name]}) for n in composed.spec.nodes]}), io_cpu


def place(composed: ComposedGraph, name: str, candidates: Sequence[Candidate], traffic: Traffic,
          *, agent: str | None = None, fuse: bool | None = None, arrangement: Alternative | None = None
          ) -> list[Part]:
    """The deploy requests of ``composed`` (see the module docstring); ``agent`` forces one by name or URL;
    ``fuse`` (default: when the agent's cores are scarce) fuses consecutive µNFs sharing a core.
    ``arrangement`` (:mod:`~micronf.orchestrator.arrange`'s choice; default: pipelined) may be
    replicas: then every µNF goes unpinned and unclustered (each replica fuses the whole chain on its
    own CPU: the agent's CPUs in order, as many as replicas, or the agent's choice when unknown); a
    mix raises the autoscaler's ``max_instances`` to what the mix scales its bottleneck to."""
    target = _choose_agent(composed, candidates, agent)
    offered = target.agent.cpus
    mode: dict[str, Any]
    if arrangement is not None and arrangement.mode == "replicas":
        spec = composed.spec.model_copy(update={"nodes": [
            n.model_copy(update={"cpu": None, "cluster": None}) for n in composed.spec.nodes]})
        n = arrangement.replicas
        mode = {"mode": "replicas", "replicas": n,
                "replica_cpus": list(offered[:n]) if offered and len(offered) >= n else None}
    else:
        spec, io_cpu = pipelined_spec(composed, offered, fuse)
        mode = {"rx_cpu": io_cpu, "tx_cpu": io_cpu}
    spec = spec.model_copy(update={"name": name})
    sfc_output = exit_outputs(composed)
    exit_names = list(sfc_output)
    outputs = dict.fromkeys(exit_names, NULL_OUTPUT)
    for key, out in traffic.outputs.items():
        targets = [x for x in exit_names if sfc_output[x] == key] or ([key] if key in exit_names else [])
        if not targets:
            known = sorted({*exit_names, *(o for o in sfc_output.values() if o)})
            raise PlacementError(f"outputs.{key}: no SFC output or exit has this name (known: {', '.join(known)})")
        outputs.update(dict.fromkeys(targets, out))
    autoscale = traffic.autoscale
    if arrangement is not None and arrangement.scale:
        autoscale = autoscale or AutoscaleSpec()
        autoscale = autoscale.model_copy(update={"max_instances": max(autoscale.max_instances,
                                                                       *arrangement.scale.values())})
    extra: dict[str, Any] = {} if autoscale is None else {"autoscale": autoscale}
    req = DeployRequest(name=name, graph=spec, rx=traffic.rx, rules=traffic.rules, outputs=outputs, **extra,
                        **mode)
    return [Part(agent=target.agent, request=req)]


def exit_outputs(composed: ComposedGraph) -> dict[str, str | None]:
    """Every exit of the graph by the agent's name for it (``out``, ``monitor.classify.other``) ->
    the SFC output it belongs to (None: an exit of no SFC output)."""
    try:
        labels = {n.name: nf_class(n.type).labels for n in composed.spec.nodes}
    except KeyError as exc:
        raise PlacementError(f"the composed graph cannot run: {exc.args[0]}") from None
    return {name: composed.output_of(node, label) for (node, label), name in label_exits(composed.spec, labels).items()}


def _choose_agent(composed: ComposedGraph, candidates: Sequence[Candidate], forced: str | None) -> Candidate:
    """The one agent the graph goes to: forced, hinted, or least loaded (see the module docstring)."""
    by_key = {key: c for c in candidates for key in (c.agent.name, c.agent.url)}
    hinted: dict[str, list[str]] = {}
    for node, hint in composed.placement.items():
        if hint.agent is not None:
            hinted.setdefault(hint.agent, []).append(node)
    if len(hinted) > 1:
        which = "; ".join(f"{a}: {', '.join(nodes)}" for a, nodes in hinted.items())
        raise PlacementError(f"placement hints name {len(hinted)} agents ({which}); a graph runs on one agent: "
                             "splitting it across machines (NSH between Tx and Rx) is not supported yet")
    wanted = [w for w in (forced, *hinted) if w is not None]
    if len(set(wanted)) > 1:
        raise PlacementError(f"the request asks for agent {forced!r} but the placement hints name {wanted[1]!r}")
    if wanted:
        chosen = by_key.get(wanted[0])
        if chosen is None:
            known = ", ".join(c.agent.name for c in candidates) or "none"
            raise PlacementError(f"no agent named {wanted[0]!r} is configured (agents: {known})")
        if chosen.load is None:
            raise NoAgentError(f"agent {chosen.agent.name} ({chosen.agent.url}) is unreachable")
        return chosen
    reachable = [c for c in candidates if c.load is not None]
    if not reachable:
        raise NoAgentError(f"no agent is reachable (tried {', '.join(c.agent.url for c in candidates) or 'none'})")
    return min(reachable, key=lambda c: c.load or 0)


def _fuse_neighbours(composed: ComposedGraph, cpus: dict[str, int | None]) -> dict[str, str | None]:
    """Node name -> cluster: each run of consecutive nodes (graph order) on one pinned CPU where
    every node after the first is fed only by the one before, which feeds nothing else (a chain:
    what a fused process can run; a Branch stays between processes) shares a cluster; a node alone
    in its run gets none (its own process)."""
    feeders: dict[str, set[str]] = {}
    fed: dict[str, set[str]] = {}
    for e in composed.spec.edges:
        feeders.setdefault(e.dst, set()).add(e.src)
        fed.setdefault(e.src, set()).add(e.dst)
    runs: list[list[str]] = []
    prev: str | None = None
    for node in composed.spec.nodes:
        chained = (prev is not None and cpus[node.name] is not None and cpus[node.name] == cpus[prev]
                   and feeders.get(node.name) == {prev} and fed.get(prev) == {node.name}
                   and node.name != composed.spec.entry)
        if chained:
            runs[-1].append(node.name)
        else:
            runs.append([node.name])
        prev = node.name
    return {n: (f"cpu{cpus[run[0]]}-{run[0]}" if len(run) > 1 else None) for run in runs for n in run}


def _assign_cpus(composed: ComposedGraph, offered: tuple[int, ...] | None,
                 spread: tuple[int, ...] | None = None) -> dict[str, int | None]:
    """Node name -> CPU: hints first (any offered CPU), the rest in contiguous blocks over ``spread``
    (default: the offered CPUs)."""
    spread = offered if spread is None else spread
    cpus: dict[str, int | None] = {}
    free: list[str] = []
    for node in composed.spec.nodes:
        if node.cpu is not None:
            if offered is not None and node.cpu not in offered:
                raise PlacementError(f"µNF {node.name}: hinted CPU {node.cpu} is not one the agent offers "
                                     f"({', '.join(map(str, offered))})")
            cpus[node.name] = node.cpu
        else:
            free.append(node.name)
    for k, node_name in enumerate(free):
        cpus[node_name] = None if not spread else spread[k * len(spread) // len(free)]
    return cpus
