"""The µNF catalog (generated from the classes) and the CLI commands around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap
from typer.testing import CliRunner

from micronf.app.cli import app
from micronf.runtime.catalog import catalog
from micronf.runtime.nf import DOC_SECTIONS, MicroNF, load_library

PAPER_NFS = {"MacSwapper", "IPTtlDecrementer", "CheckIPHeader", "L3L4Filter", "HttpClassifier", "ValidateUrl",
             "CountUrl", "PacketSizeCounter", "FlowLoadBalancer", "BusyLoop"}


def test_library_is_complete_and_documented_in_the_fixed_format() -> None:
    load_library()
    lib = {n: c for n, c in MicroNF.registry.items() if c.__module__.startswith("micronf.nfs.")}
    assert set(lib) == PAPER_NFS
    for name, cls in lib.items():
        sections = cls.doc_sections()
        assert sections["Summary"], name
        assert all(s in sections for s in DOC_SECTIONS), (name, sorted(sections))
        assert cls.__module__.split(".")[-1] != "", name


def test_catalog_entries_come_from_the_classes() -> None:
    entries = {e.name: e for e in catalog()}
    busy = entries["BusyLoop"]
    assert [f.name for f in busy.config] == ["cycles", "mode"] and busy.config[0].default == 100
    assert busy.config[1].default == "spin"
    assert entries["IPTtlDecrementer"].labels == ["out", "expired"]
    assert entries["CheckIPHeader"].descriptor["may_drop"] is True
    assert entries["FlowLoadBalancer"].config[0].required  # backends must be given


def test_nfs_command_text_and_json() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["nfs", "CountUrl"])
    assert res.exit_code == 0 and "CountUrl" in res.output and "urls" in res.output
    res = runner.invoke(app, ["nfs", "--json"])
    assert {e["name"] for e in json.loads(res.output)} >= PAPER_NFS
    res = runner.invoke(app, ["nfs", "Nope"])
    assert res.exit_code == 2 and "no µNF named 'Nope'" in res.output


def test_chain_command_reports_errors_clearly(tmp_path: Path) -> None:
    pcap = tmp_path / "in.pcap"
    wrpcap(str(pcap), [Ether() / IP() / UDP()])
    runner = CliRunner()
    res = runner.invoke(app, ["chain", "MacSwapper -> Nope", "--pcap", str(pcap), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown µNF type 'Nope'" in res.output
    res = runner.invoke(app, ["chain", "BusyLoop(cycles=-5)", "--pcap", str(pcap), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "cycles" in res.output
    (tmp_path / "bad.pcap").write_bytes(b"hello world, not a capture")
    res = runner.invoke(app, ["chain", "MacSwapper", "--pcap", str(tmp_path / "bad.pcap"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "bad.pcap" in res.output


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chain_command_end_to_end(tmp_path: Path) -> None:
    pkts = [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(ttl=1 + i % 3) / UDP() for i in range(300)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    res = CliRunner().invoke(app, ["chain", "IPTtlDecrementer -> MacSwapper", "--pcap", str(tmp_path / "in.pcap"),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "conservation ok" in res.output
    expired = rdpcap(str(tmp_path / "out" / "IPTtlDecrementer.expired.pcap"))
    out = rdpcap(str(tmp_path / "out" / "out.pcap"))
    assert len(expired) == 100 and len(out) == 200
    assert all(p[Ether].src == "02:00:00:00:00:02" for p in out)
