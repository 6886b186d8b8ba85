"""No process outlives its owner: ``micronf run`` and ``micronf chain`` under SIGTERM, SIGHUP and kill -9.

Each run gets its own segment directory (``MICRONF_SHM_DIR``), so ``micronf shm gc`` here only sees
this test's segments, and a marker in its environment, which every process it starts inherits
(zygote, µNFs, Rx, Tx): the test finds them through ``/proc/*/environ``, independently of the
code under test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

pytestmark = [pytest.mark.timeout(300)]

SRC = Path(__file__).resolve().parents[2] / "src"
MARK = "MICRONF_TEST_MARK"


def marked(mark: str) -> list[int]:
    """Live (not zombie) processes whose environment carries ``MARK=mark``."""
    pids = []
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] not in "ZX":
            pids.append(int(entry.name))
    return pids


def cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
    return out


def wait_for(cond: object, timeout: float, what: str) -> float:
    """Poll ``cond()`` until true; returns the seconds it took (fails the test after ``timeout``)."""
    t0 = time.monotonic()
    while not cond():  # type: ignore[operator]
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)
    return time.monotonic() - t0


class Owner:
    """A ``micronf`` command run as a subprocess with a marker and a private segment directory."""

    def __init__(self, shm_dir: Path, *args: str) -> None:
        self.mark = uuid.uuid4().hex
        self.shm_dir = shm_dir
        self.env = {**os.environ, MARK: self.mark, "MICRONF_SHM_DIR": str(shm_dir),
                    "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "micronf", *args], env=self.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def segments(self) -> list[Path]:
        return sorted(self.shm_dir.glob("micronf-*"))

    def wait_running(self, processes: int, timeout: float = 180.0) -> None:
        """Until the owner and ``processes`` more (zygote, µNFs, services) run and the segment exists."""
        wait_for(lambda: self.proc.poll() is not None or (len(marked(self.mark)) >= processes + 1
                                                          and self.segments()), timeout, "the graph to start")
        assert self.proc.poll() is None, self.proc.communicate()
        time.sleep(0.5)  # let the last ones report ready

    def gc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "micronf", "shm", "gc", *args], env=self.env, text=True,
                              capture_output=True, timeout=60, check=False)

    def kill_all(self) -> None:
        for pid in marked(self.mark):
            os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)
        for seg in self.segments():
            seg.unlink()


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    path = Path("/dev/shm") / f"micronf-test-dir-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    for p in path.iterdir():
        p.unlink()
    path.rmdir()


def live_run(shm_dir: Path) -> Owner:
    """A ``micronf run`` that would go on for minutes: a paced generator and a long --seconds."""
    return Owner(shm_dir, "run", "--packets", "10000000", "--rate", "2000", "--seconds", "600")


def chain_run(shm_dir: Path, tmp: Path) -> Owner:
    """A ``micronf chain`` of two µNF processes replaying a capture for minutes."""
    pkts = [Ether() / IP(src="10.0.0.1", dst=f"10.0.1.{i % 200}", ttl=64) / UDP(sport=1000 + i, dport=53)
            for i in range(64)]
    wrpcap(str(tmp / "in.pcap"), pkts)
    return Owner(shm_dir, "chain", "CheckIPHeader -> IPTtlDecrementer", "--pcap", str(tmp / "in.pcap"),
                 "--out", str(tmp / "out"), "--loop", "100000000")


@pytest.mark.parametrize("kind", ["run", "chain"])
def test_kill9_of_the_owner_ends_every_process_and_gc_removes_the_segment(shm_dir: Path, tmp_path: Path,
                                                                         kind: str) -> None:
    owner = live_run(shm_dir) if kind == "run" else chain_run(shm_dir, tmp_path)
    try:
        # run: zygote + 1 fused µNF process (2 CPUs) or more + Rx + Tx; chain: zygote + 2 µNFs
        owner.wait_running(4 if kind == "run" else 3)
        started = [p for p in marked(owner.mark) if p != owner.proc.pid]
        assert any("micronf.runtime.zygote" in c for c in cmdlines(started))
        assert len(owner.segments()) == 1
        os.kill(owner.proc.pid, signal.SIGKILL)
        owner.proc.wait()  # not communicate(): processes left behind would hold its pipes open
        took = wait_for(lambda: not marked(owner.mark), 2.0, f"{cmdlines(marked(owner.mark))} to exit")
        print(f"{kind}: {len(started)} processes gone {took * 1e3:.0f} ms after kill -9 of their owner")
        assert took < 1.0
        gc = owner.gc()
        assert gc.returncode == 0, gc.stdout + gc.stderr
        assert "1 segment(s) removed" in gc.stdout
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


def test_sigterm_stops_a_chain_and_removes_its_processes_and_segment(shm_dir: Path, tmp_path: Path) -> None:
    owner = chain_run(shm_dir, tmp_path)
    try:
        owner.wait_running(3)
        owner.proc.send_signal(signal.SIGTERM)
        _out, err = owner.proc.communicate(timeout=60)
        assert owner.proc.returncode != 0, err
        assert not marked(owner.mark), cmdlines(marked(owner.mark))
        assert owner.segments() == []
    finally:
        owner.kill_all()
