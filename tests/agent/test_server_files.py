"""Capture files of a deploy request stay inside the agent's data directory (issue 12, files).

Hostile requests go through the HTTP app over the *real* agent core (no monitor thread): each must
be refused with a 400 naming the field before any process starts, and leave every file outside
the data directory as it was. One real deployment checks that a pcap output is readable while the
graph runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from micronf.agent.core import Agent
from micronf.agent.files import confine
from micronf.agent.server import create_app
from micronf.api.models import DeployRequest
from micronf.dataplane.segment import list_segments
from micronf.io.pcap_write import PcapWriter
from tests.agent.test_server import call

pytestmark = pytest.mark.timeout(120)

SECRET = b"root:$6$very-secret-hash:19000:0:99999:7:::\n"


def _request(name: str, *, rx: dict[str, Any] | None = None, out: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "graph": {"nodes": [{"name": "swap", "type": "MacSwapper"}], "edges": [], "entry": "swap"}}
    if rx is not None:
        body["rx"] = rx
    if out is not None:
        body["outputs"] = {"out": out}
    return body


def _pcap_out(path: str, **extra: Any) -> dict[str, Any]:
    return {"backend": {"kind": "pcap", "path": path}, **extra}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(data directory, a directory outside it holding a victim file and a secret)."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "victim.pcap").write_bytes(b"precious")
    (outside / "shadow").write_bytes(SECRET)
    return data, outside


@pytest.fixture
def app(dirs: tuple[Path, Path]) -> Iterator[FastAPI]:
    agent = Agent(monitor=False, data_dir=dirs[0])
    try:
        yield create_app(agent, token=None)
    finally:
        agent.close()


def _refused(app: FastAPI, body: dict[str, Any], field: str) -> str:
    r = call(app, "POST", "/v1/deployments", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_deployment" and r.json()["detail"].startswith(field), r.text
    assert SECRET.decode()[:10] not in r.text
    assert not [s for s in list_segments() if body["name"] in s.name]
    return str(r.json()["detail"])


@pytest.mark.parametrize("path", ["../outside/victim.pcap", "sub/../../outside/victim.pcap", "ABSOLUTE"],
                         ids=["dot-dot", "nested dot-dot", "absolute"])
def test_an_output_outside_the_data_directory_is_refused(app: FastAPI, dirs: tuple[Path, Path], path: str) -> None:
    victim = dirs[1] / "victim.pcap"
    path = str(victim) if path == "ABSOLUTE" else path
    detail = _refused(app, _request("trav", out=_pcap_out(path)), "outputs.out.backend.path")
    assert "data directory" in detail
    assert victim.read_bytes() == b"precious"


def test_a_seqcheck_state_file_is_confined_like_a_pcap_output(app: FastAPI, dirs: tuple[Path, Path]) -> None:
    out = {"backend": {"kind": "seqcheck", "path": "../outside/victim.pcap", "capacity": 10}}
    detail = _refused(app, _request("seq", out=out), "outputs.out.backend.path")
    assert "data directory" in detail
    assert (dirs[1] / "victim.pcap").read_bytes() == b"precious"


def test_no_directory_is_created_outside(app: FastAPI, dirs: tuple[Path, Path]) -> None:
    _refused(app, _request("mkdir", out=_pcap_out("../made-by-agent/x.pcap")), "outputs.out.backend.path")
    assert not (dirs[0].parent / "made-by-agent").exists()


def test_a_symlink_leading_out_is_refused(app: FastAPI, dirs: tuple[Path, Path]) -> None:
    data, outside = dirs
    (data / "escape").symlink_to(outside)
    (data / "victim-link.pcap").symlink_to(outside / "victim.pcap")
    for path in ("escape/victim.pcap", "victim-link.pcap", "escape/new.pcap"):
        detail = _refused(app, _request("link", out=_pcap_out(path)), "outputs.out.backend.path")
        assert "leads out" in detail
    _refused(app, _request("link", rx={"kind": "pcap", "path": "escape/shadow"}), "rx.path")
    assert (outside / "victim.pcap").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["shadow", "victim.pcap"]


def test_an_existing_file_is_not_replaced_unless_asked(app: FastAPI, dirs: tuple[Path, Path]) -> None:
    data = dirs[0]
    (data / "old.pcap").write_bytes(b"an earlier capture")
    detail = _refused(app, _request("exists", out=_pcap_out("old.pcap")), "outputs.out.backend.path")
    assert "exists" in detail and "overwrite" in detail
    assert (data / "old.pcap").read_bytes() == b"an earlier capture"
    # with overwrite: true the agent truncates it (checked without starting processes)
    req = DeployRequest.model_validate(_request("exists", out=_pcap_out("old.pcap", overwrite=True)))
    with confine(req, data) as confined:
        assert confined.outputs["out"].backend["path"] == str(data / "old.pcap")
    assert (data / "old.pcap").read_bytes() == b""


def test_system_files_as_pcap_input_are_refused_without_quoting_them(app: FastAPI, dirs: tuple[Path, Path]) -> None:
    data, outside = dirs
    for path in ("/etc/shadow", "../../../../../../etc/shadow", str(outside / "shadow")):
        _refused(app, _request("shadow", rx={"kind": "pcap", "path": path}), "rx.path")
    # a file inside the data directory that is no capture: named, its bytes never shown
    (data / "notes.pcap").write_bytes(SECRET)
    detail = _refused(app, _request("shadow", rx={"kind": "pcap", "path": "notes.pcap"}), "rx.path")
    assert "not a pcap or pcapng capture" in detail and "726f6f74" not in detail  # hex of "root"


def test_confine_makes_names_absolute_and_removes_new_outputs_on_failure(dirs: tuple[Path, Path]) -> None:
    data = dirs[0]
    with PcapWriter(data / "in.pcap") as w:
        w.write_frames([bytes(64)])
    req = DeployRequest.model_validate(_request("ok", rx={"kind": "pcap", "path": "in.pcap"},
                                                out=_pcap_out("runs/today/out.pcap")))
    with pytest.raises(RuntimeError), confine(req, data) as confined:
        assert confined.rx == {"kind": "pcap", "path": str(data / "in.pcap")}
        out = data / "runs" / "today" / "out.pcap"
        assert confined.outputs["out"].backend["path"] == str(out) and out.is_file()
        assert os.stat(out).st_mode & 0o777 == 0o600
        raise RuntimeError("the deployment failed")
    assert not (data / "runs" / "today" / "out.pcap").exists()  # the file it created is gone
    with pytest.raises(Exception, match="the same file"), confine(DeployRequest.model_validate({
            **_request("dup"), "capture_drops": True, "outputs": {"out": _pcap_out("x.pcap"),
                                                                  "swap.x": _pcap_out("./x.pcap")}}), data):
        pass


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_pcap_output_is_readable_while_the_graph_runs(tmp_path: Path) -> None:
    frames = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2") /
                    UDP(sport=1000 + i, dport=53) / (b"x" * 20)) for i in range(20)]
    # 20 frames, replayed once at their original (1 s apart) timing: the graph runs for 20 s
    with PcapWriter(tmp_path / "slow.pcap") as w:
        for i, f in enumerate(frames):
            w.write_frames([f], ts_ns=[i * 1_000_000_000])
    req = DeployRequest.model_validate(_request(
        "flush", rx={"kind": "pcap", "path": "slow.pcap", "timing": "original"}, out=_pcap_out("out.pcap")))
    with Agent(data_dir=tmp_path) as agent:
        agent.deploy(req)
        deadline = time.monotonic() + 60
        while agent.stats("flush").tx.get("out", {}).get("frames", 0) < 2:
            assert time.monotonic() < deadline, agent.stats("flush")
            time.sleep(0.05)
        time.sleep(1.2)  # the Tx service flushes at least every second
        seen = rdpcap(str(tmp_path / "out.pcap"))
        running = agent.stats("flush").rx["frames"] < len(frames)
        agent.remove("flush")
    assert running and len(seen) >= 2
    assert bytes(seen[0])[12:] == frames[0][12:]  # MacSwapper swapped the addresses, the rest is as sent
