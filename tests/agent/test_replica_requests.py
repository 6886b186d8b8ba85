"""What a replicated deployment refuses, and the files it writes, before any process starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from micronf.agent.core import Agent
from micronf.agent.files import confine, replica_file
from micronf.agent.replicas import base_segment, fanout_group, replica_cpus, replica_segment
from micronf.api.errors import InvalidDeploymentError
from micronf.api.models import DeployRequest
from micronf.dataplane.segment import list_segments

CHAIN = {"nodes": [{"name": "chk", "type": "CheckIPHeader"}, {"name": "ttl", "type": "IPTtlDecrementer"}],
         "edges": [{"src": "chk", "label": "out", "dst": "ttl"}], "entry": "chk"}
FORK = {"nodes": [{"name": "cls", "type": "HttpClassifier"}, {"name": "a", "type": "MacSwapper"},
                  {"name": "b", "type": "MacSwapper"}],
        "edges": [{"src": "cls", "label": "http", "dst": "a"}, {"src": "cls", "label": "other", "dst": "b"}],
        "entry": "cls"}


def _req(**kw: Any) -> DeployRequest:
    return DeployRequest.model_validate({"name": "rep", "graph": CHAIN, "mode": "replicas",
                                         "rx": {"kind": "generator", "count": 10}, **kw})


def _refused(agent: Agent, req: DeployRequest) -> str:
    before = {i.name for i in list_segments()}
    with pytest.raises(InvalidDeploymentError) as err:
        agent.deploy(req)
    assert {i.name for i in list_segments()} == before and agent.deployments() == []  # nothing was created
    return str(err.value)


def test_refusals_name_the_reason(tmp_path: Path) -> None:
    usable = sorted(os.sched_getaffinity(0))
    with Agent(monitor=False, data_dir=tmp_path) as agent:
        why = _refused(agent, _req(graph=FORK, replicas=1))
        assert "mode replicas" in why and "'cls' feeds a, b" in why and "pipelined" in why
        why = _refused(agent, _req(replicas=len(usable) + 1))
        assert f"{len(usable) + 1} replicas need as many CPUs" in why
        why = _refused(agent, _req(replicas=1, replica_cpus=[max(usable) + 1]))
        assert "replica_cpus" in why and str(max(usable) + 1) in why
        if len(usable) >= 2:
            why = _refused(agent, _req(replicas=2, replica_cpus=[usable[0], usable[0]]))
            assert "two replicas" in why


def test_cpus_default_to_the_usable_ones_in_order() -> None:
    usable = sorted(os.sched_getaffinity(0))
    assert replica_cpus(_req(replicas=len(usable))) == usable
    assert replica_cpus(_req(replicas=1, replica_cpus=[usable[-1]])) == [usable[-1]]


def test_segment_names_and_fanout_groups() -> None:
    assert replica_segment("mnf-a1-web", 3) == "mnf-a1-web.r3"
    assert base_segment("mnf-a1-web.r3") == "mnf-a1-web" and base_segment("mnf-a1-web") == "mnf-a1-web"
    assert 0 <= fanout_group("a1", "web") <= 0xFFFF and fanout_group("a1", "web") == fanout_group("a1", "web")


def test_each_replica_gets_its_own_output_file(tmp_path: Path) -> None:
    assert replica_file("out.pcap", 1) == "out.r1.pcap" and replica_file("d/x.y.pcap", 0) == "d/x.y.r0.pcap"
    assert replica_file("state", 2) == "state.r2"
    req = _req(replicas=2, outputs={"out": {"backend": {"kind": "pcap", "path": "caps/out.pcap"}}})
    with confine(req, tmp_path) as confined:
        path = confined.outputs["out"].backend["path"]
        assert path == str(tmp_path.resolve() / "caps" / "out.pcap")
        assert sorted(p.name for p in (tmp_path / "caps").iterdir()) == ["out.r0.pcap", "out.r1.pcap"]
    (tmp_path / "caps" / "out.r0.pcap").unlink()
    (tmp_path / "caps" / "out.r1.pcap").unlink()
    # a symlink where a replica's file goes is refused, and nothing is left behind
    (tmp_path / "caps" / "out.r1.pcap").symlink_to(tmp_path / "caps" / "elsewhere.pcap")
    with pytest.raises(InvalidDeploymentError, match="symlink"), confine(req, tmp_path):
        pass
    assert sorted(p.name for p in (tmp_path / "caps").iterdir()) == ["out.r1.pcap"]
    # an existing file is not replaced without overwrite: the files created before it are removed again
    (tmp_path / "caps" / "out.r1.pcap").unlink()
    (tmp_path / "caps" / "out.r1.pcap").write_bytes(b"keep")
    with pytest.raises(InvalidDeploymentError, match="exists"), confine(req, tmp_path):
        pass
    assert sorted(p.name for p in (tmp_path / "caps").iterdir()) == ["out.r1.pcap"]
    assert (tmp_path / "caps" / "out.r1.pcap").read_bytes() == b"keep"
