"""docs/authoring.md works as written: its third-party µNF (``dscp_marker.py``) and its test file
are extracted from the page, the test file passes under pytest (harness + scapy), and the µNF
runs in real µNF processes, loaded through ``MICRONF_NF_MODULES`` by ``micronf chain``, with
every exit's frames equal to what scapy computes from the input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap, wrpcap

DOC = Path(__file__).resolve().parents[2] / "docs" / "authoring.md"
BLOCK = re.compile(r"^```python (\S+\.py)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@pytest.fixture
def author_dir(tmp_path: Path) -> Path:
    """A directory holding the page's files, as a third-party author would have them."""
    files = dict(BLOCK.findall(DOC.read_text()))
    assert set(files) == {"dscp_marker.py", "test_dscp_marker.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _env(author_dir: Path) -> dict[str, str]:
    path = [str(author_dir), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "MICRONF_NF_MODULES": "dscp_marker"}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.timeout(600)
def test_the_pages_test_file_passes(author_dir: Path) -> None:
    res = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_dscp_marker.py"],
               author_dir, _env(author_dir))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 passed" in res.stdout


def _traffic() -> list[Ether]:
    pkts: list[Ether] = []
    for i in range(300):
        l4 = TCP(sport=1000 + i, dport=80) if i % 2 else UDP(sport=1000 + i, dport=53)
        pkts.append(Ether(bytes(Ether() / IP(src="10.0.0.1", dst=f"10.1.0.{i % 200}", tos=i % 256) / l4)))
        if i % 50 == 7:
            pkts.append(Ether(bytes(Ether() / ARP(pdst=f"10.0.0.{i % 200}"))))
    return pkts


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_runtime_loads_it_through_micronf_nf_modules(author_dir: Path) -> None:
    pkts = _traffic()
    wrpcap(str(author_dir / "in.pcap"), pkts)
    env = _env(author_dir)
    res = _run(["micronf", "nfs", "DscpMarker"], author_dir, env)
    assert res.returncode == 0 and "truncated" in res.stdout, res.stdout + res.stderr
    res = _run(["micronf", "chain", "DscpMarker(dscp=46)", "--pcap", "in.pcap", "--out", "out"], author_dir, env)
    assert res.returncode == 0, res.stdout + res.stderr
    marked, other = [], []
    for p in pkts:
        if IP in p:
            q = p.copy()
            q[IP].tos = 46 << 2 | p[IP].tos & 3
            del q[IP].chksum
            marked.append(bytes(Ether(bytes(q))))
        else:
            other.append(bytes(p))
    assert [bytes(p) for p in rdpcap(str(author_dir / "out" / "marked.pcap"))] == marked
    assert [bytes(p) for p in rdpcap(str(author_dir / "out" / "other.pcap"))] == other
    assert len(rdpcap(str(author_dir / "out" / "DscpMarker.truncated.pcap"))) == 0
