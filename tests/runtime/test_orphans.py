"""No process outlives its owner: ``micronf run`` and ``micronf chain`` under SIGTERM, SIGHUP and kill -9.

Each run gets its own segment directory and a marker every process it starts inherits (see
``tests.procs``), so the test finds them through ``/proc``, independently of the code under test.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from tests.procs import Owner, cmdlines, marked, wait_for

pytestmark = [pytest.mark.timeout(300)]

def live_run(shm_dir: Path, mode: str = "pipelined") -> Owner:
    """A ``micronf run`` that would go on for minutes: a paced generator and a long --seconds; ``mode``
    "replicas": two replicas (two segments, each a zygote and one replica process)."""
    arrange = ["--mode", "replicas", "--replicas", "2"] if mode == "replicas" else ["--mode", mode]
    return Owner(shm_dir, "run", "--packets", "10000000", "--rate", "2000", "--seconds", "600", *arrange)


def chain_run(shm_dir: Path, tmp: Path) -> Owner:
    """A ``micronf chain`` of two µNF processes (``--processes``: by default a chain runs in its own
    process, with nothing to outlive it) replaying a capture for minutes."""
    pkts = [Ether() / IP(src="10.0.0.1", dst=f"10.0.1.{i % 200}", ttl=64) / UDP(sport=1000 + i, dport=53)
            for i in range(64)]
    wrpcap(str(tmp / "in.pcap"), pkts)
    return Owner(shm_dir, "chain", "CheckIPHeader -> IPTtlDecrementer", "--pcap", str(tmp / "in.pcap"),
                 "--out", str(tmp / "out"), "--loop", "100000000", "--processes")


@pytest.mark.parametrize("kind", ["run", "replicas", "chain"])
def test_kill9_of_the_owner_ends_every_process_and_gc_removes_the_segment(shm_dir: Path, tmp_path: Path,
                                                                         kind: str) -> None:
    owner = chain_run(shm_dir, tmp_path) if kind == "chain" else live_run(shm_dir, kind.replace("run", "pipelined"))
    segments = 2 if kind == "replicas" else 1
    try:
        # run: zygote + 1 fused µNF process (2 CPUs) or more + Rx + Tx; replicas: 2 x (zygote + replica);
        # chain: zygote + 2 µNFs
        owner.wait_running(3 if kind == "chain" else 4)
        started = [p for p in marked(owner.mark) if p != owner.proc.pid]
        assert any("micronf.runtime.zygote" in c for c in cmdlines(started))
        assert len(owner.segments()) == segments
        os.kill(owner.proc.pid, signal.SIGKILL)
        owner.proc.wait()  # not communicate(): processes left behind would hold its pipes open
        took = wait_for(lambda: not marked(owner.mark), 2.0, f"{cmdlines(marked(owner.mark))} to exit")
        print(f"{kind}: {len(started)} processes gone {took * 1e3:.0f} ms after kill -9 of their owner")
        assert took < 1.0
        gc = owner.gc()
        assert gc.returncode == 0, gc.stdout + gc.stderr
        assert f"{segments} segment(s) removed" in gc.stdout
        assert owner.segments() == []
    finally:
        owner.kill_all()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_live_run_like_ctrl_c(shm_dir: Path, sig: signal.Signals) -> None:
    owner = live_run(shm_dir)
    try:
        owner.wait_running(4)
        owner.proc.send_signal(sig)
        out, err = owner.proc.communicate(timeout=60)
        assert owner.proc.returncode == 130, err  # interrupted, as after Ctrl-C
        assert "interrupted" in out and "packets in" in out, out  # the summary is printed
        assert not marked(owner.mark), cmdlines(marked(owner.mark))
        assert owner.segments() == []
    finally:
        owner.kill_all()


@pytest.mark.parametrize("when", ["starting", "running"])
def test_sigterm_stops_a_chain_and_removes_its_processes_and_segment(shm_dir: Path, tmp_path: Path,
                                                                      when: str) -> None:
    owner = chain_run(shm_dir, tmp_path)
    try:
        if when == "running":
            owner.wait_running(3)
        else:  # while the zygote loads the hot loops, before any µNF runs
            wait_for(lambda: len(marked(owner.mark)) >= 2, 120, "the zygote to start")
        owner.proc.send_signal(signal.SIGTERM)
        _out, err = owner.proc.communicate(timeout=60)
        assert owner.proc.returncode != 0, err
        assert "Traceback" not in err, err
        assert not marked(owner.mark), cmdlines(marked(owner.mark))
        assert owner.segments() == []
    finally:
        owner.kill_all()
