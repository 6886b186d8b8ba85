"""Finding the processes a test started, through /proc, independently of the code under test.

A marker in a command's environment is inherited by every process it starts (zygote, µNFs, Rx,
Tx); :func:`marked` finds them. :class:`Owner` runs a ``micronf`` command that way, with its own
segment directory (``MICRONF_SHM_DIR``, conftest's ``shm_dir`` fixture), so that ``micronf shm gc``
there sees only its segments.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MARK = "MICRONF_TEST_MARK"


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP or traced), from its /proc state."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "tT"


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


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
    return out


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``cond()`` until true; returns the seconds it took (fails the test after ``timeout``)."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)
    return time.monotonic() - t0


class Owner:
    """A ``micronf`` command run as a subprocess with a marker and a private segment directory."""

    def __init__(self, shm_dir: Path, *args: str, log: Path | None = None, mark: str | None = None) -> None:
        """``log``: write stdout and stderr there (a long-running server), else pipes; ``mark``: share
        another owner's marker (e.g. the next agent of the same graphs)."""
        self.mark = mark or uuid.uuid4().hex
        self.shm_dir = shm_dir
        self.env = {**os.environ, MARK: self.mark, "MICRONF_SHM_DIR": str(shm_dir),
                    "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        out = subprocess.PIPE if log is None else log.open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "micronf", *args], env=self.env, text=True,
                                     stdout=out, stderr=subprocess.STDOUT if log else subprocess.PIPE)

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
