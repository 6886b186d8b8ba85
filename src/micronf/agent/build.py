"""What every deployment builds the same way, pipelined or replicated.

A pipelined deployment (:mod:`micronf.agent.deployment`) runs one graph segment; a replicated one
(:mod:`micronf.agent.replicas`) runs one segment per replica. Each segment is built alike: the
request validated into a layout (:func:`validated_layout`), a :class:`GraphRuntime` sized for it
(:func:`new_runtime`), the record a new agent adopts it from (:func:`save_record`,
:func:`read_record`), the Rx/Tx services' configs (:func:`write_service_configs`); and a restart of
one of its processes is recorded alike (:func:`restart_event`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from micronf.agent.limits import check_fits
from micronf.api.errors import InvalidDeploymentError
from micronf.api.models import DeployRequest, OutputSpec, RestartEventInfo
from micronf.dataplane.segment import Memory, read_json, write_json
from micronf.io.specs import check_rx, check_tx
from micronf.runtime.graph import GraphError, GraphLayout, GraphSpec, plan
from micronf.runtime.launch import GraphRuntime
from micronf.runtime.nf import NFConfigError
from micronf.services.config import RxConfig, TxConfig, TxOutput, write_config
from micronf.services.iomem import io_regions

AGENT_RECORD, RECORD_BYTES = "agent.record", 1 << 20  # segment region: what adopting the deployment needs
SEGMENT_PREFIX = "mnf-"  # a deployment's segment is SEGMENT_PREFIX + "<agent id>-" + its name (+ ".r<i>")


def validated_layout(req: DeployRequest, spec: GraphSpec, *, spare_rings: int = 64) -> tuple[GraphLayout, list[str]]:
    """``spec`` (the request's graph, or what it becomes) planned with ``spare_rings`` for scale-out
    instances, with the names of its exits; every refusal (a bad µNF, config, backend or output
    name) is an :class:`InvalidDeploymentError`."""
    try:
        if req.rx is not None:
            check_rx(req.rx)
        for name, out in req.outputs.items():
            check_tx(out.backend, where=f"outputs.{name}")
        layout = plan(spec, capture_drops=req.capture_drops, on_full=req.on_full, spare_rings=spare_rings)
    except (GraphError, NFConfigError, ValueError) as exc:
        raise InvalidDeploymentError(str(exc)) from None
    exits = [x.name for x in layout.exits]
    unknown = sorted(set(req.outputs) - set(exits))
    if unknown:
        raise InvalidDeploymentError(f"outputs name exits the graph does not have: {', '.join(unknown)} "
                                     f"(exits: {', '.join(exits)})")
    return layout, list(dict.fromkeys(exits))


def new_runtime(req: DeployRequest, layout: GraphLayout, segment: str, *, preload: tuple[str, ...],
                detached: bool, ring_capacity: int | None = None) -> GraphRuntime:
    """The runtime of one segment of ``req`` (``ring_capacity``: instead of the request's), refused
    before anything exists if it would not fit."""
    runtime = GraphRuntime(layout, segment=segment, pool_slots=req.pool_slots,
                           ring_capacity=req.ring_capacity if ring_capacity is None else ring_capacity,
                           preload=preload, extra_regions={**io_regions(), AGENT_RECORD: RECORD_BYTES},
                           frame_capacity=req.frame_capacity, detached=detached)
    check_fits(runtime)  # a sparse tmpfs file would not say
    return runtime


@dataclass(frozen=True)
class Record:
    """What a segment's ``agent.record`` says (see :func:`save_record`)."""

    req: DeployRequest
    ns_per_cycle: float
    created_at: float
    restarts: list[RestartEventInfo]
    extra: dict[str, Any]


def save_record(mem: Memory, req: DeployRequest, *, ns_per_cycle: float, created_at: float,
                restarts: list[RestartEventInfo], **extra: Any) -> None:
    """Store in the segment what a new agent needs to adopt it: the request, the calibration, when it
    was created, its restarts so far, and what the kind of deployment adds (``extra``, JSON)."""
    events = [ev.model_dump(mode="json") for ev in restarts]
    write_json(mem, AGENT_RECORD, {"request": req.model_dump(mode="json"), "ns_per_cycle": ns_per_cycle,
                                   "created_at": created_at, "restarts": events, **extra})


def read_record(mem: Memory) -> Record:
    """The record :func:`save_record` stored (raises when it cannot be read back)."""
    cfg = dict(read_json(mem, AGENT_RECORD))
    return Record(req=DeployRequest.model_validate(cfg.pop("request")), ns_per_cycle=float(cfg.pop("ns_per_cycle")),
                  created_at=float(cfg.pop("created_at")),
                  restarts=[RestartEventInfo.model_validate(ev) for ev in cfg.pop("restarts")], extra=cfg)


def write_service_configs(mem: Memory, req: DeployRequest, exit_names: list[str], ns_per_cycle: float, *,
                          outputs: Mapping[str, OutputSpec] | None = None, cpu: int | None = None,
                          **rx: Any) -> None:
    """Tell the Rx and Tx services (or the replica that runs both) what to do: they read nothing else
    of the request. ``outputs``: the exits' outputs (default the request's), ``cpu``: both services'
    CPU (default the request's ``rx_cpu``/``tx_cpu``), ``rx``: further Rx fields (a replica's shard)."""
    outs = req.outputs if outputs is None else outputs
    common = {"name": req.name, "burst": req.burst, "coalesce_us": req.io_coalesce_us, "policy": req.io_policy}
    tx_outputs = [TxOutput(exit=name, backend=out.backend, next_hop_mac=out.next_hop_mac) if out is not None
                  else TxOutput(exit=name, backend=None)
                  for name, out in ((n, outs.get(n)) for n in exit_names)]
    write_config(mem, RxConfig(**common, cpu=req.rx_cpu if cpu is None else cpu, backend=req.rx, rules=req.rules,
                               **rx))
    write_config(mem, TxConfig(**common, cpu=req.tx_cpu if cpu is None else cpu, outputs=tx_outputs,
                               ns_per_cycle=ns_per_cycle))


def restart_event(*, process: int, nodes: list[str], code: int, lost: int, since: float,
                  replica: int | None = None) -> RestartEventInfo:
    """The event of a process restarted after it exited with ``code`` (negative: killed by that
    signal), having lost ``lost`` packets, down since ``since`` (monotonic)."""
    status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    return RestartEventInfo(at=time.time(), process=process, nodes=nodes, exit_status=status, reclaimed_buffers=lost,
                            downtime_ms=(time.monotonic() - since) * 1e3, replica=replica)
