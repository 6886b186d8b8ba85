"""A fork server per graph: µNF processes start (and restart) in milliseconds, not seconds.

Why: a fresh ``python -m micronf.runtime.process`` spends 1.5-3 s importing numpy/numba and
loading its hot loop from numba's cache — too slow to restart a crashed µNF "within a second",
and N of them starting together on two cores take N times that. The zygote pays this once per
graph: it attaches the segment, loads (compiling if needed) every process's hot loop and any
preloaded module, then forks a child per request. The child inherits the loaded code and runs
the usual entry point at once. µNFs stay real, separate OS processes.

Protocol on stdin/stdout (one line each way per request):
``spawn SLOT MODULE:FUNC ARG...`` → ``pid N``: fork; the child calls ``FUNC(*ARGS)`` from
``MODULE`` and exits with its return value. ``SLOT`` is the child's control line in the graph's
segment: the zygote reaps every child and records its exit status there
(:meth:`~micronf.dataplane.control.ControlLine.record_exit`, negative = killed by that signal),
which is how :class:`Child` (in the parent, which is not the child's parent) learns it.
``preload MODULE`` → ``ok``: import MODULE in the zygote and call its ``warm(segment_name)`` if it has one.

Who outlives whom (``--owner PID`` or ``--detached``):

- *tied* (the default: ``micronf run``, ``micronf chain``, tests): the graph lives no longer than
  the process that started it. The zygote watches its owner through a pidfd (a thread: it also
  fires while the hot loops are still compiling) and exits the moment the owner is gone, and
  every child is forked with ``PR_SET_PDEATHSIG = SIGKILL`` (then checks ``getppid()`` to close
  the race with a zygote that died in between), so a ``kill -9`` of the owner ends the zygote and
  every µNF/Rx/Tx process within milliseconds. EOF on stdin (the owner closed it, or died) ends
  the zygote too, and with it any child still running.
- *detached* (``micronf agent``): the graph must survive its agent (a crash, an upgrade). The
  zygote runs in its own session (no terminal signal reaches it), children get no death signal,
  and EOF on stdin only ends the zygote: the µNFs keep forwarding until told to stop through the
  segment, and a new agent adopts them from it (see ``micronf.agent.core``).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import IO

from micronf.dataplane.control import ControlLine
from micronf.dataplane.segment import SegmentNotFoundError
from micronf.runtime.process import boost_start
from micronf.runtime.stage import GraphMemory
from micronf.runtime.unf import warm_all

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent ``parent`` exits; exit at once
    if that already happened (we were reparented between fork and prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(0)


def exit_with_owner(owner: int) -> None:
    """End this process (at once, whatever its main thread is doing) when process ``owner`` ends.

    A pidfd watched by a daemon thread: unlike ``PR_SET_PDEATHSIG`` it does not depend on which
    thread of the owner started us, and it also covers the minutes a first compile can take."""
    try:
        fd = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(0)
    if os.getppid() != owner:  # it died before the pidfd was opened (and its pid may be reused)
        os._exit(0)

    def watch() -> None:
        select.select([fd], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


class ZygoteError(RuntimeError):
    """The fork server failed to start or to answer."""


class Child:
    """A process forked by a zygote, watched through a pidfd (it is not our child). ``adopted``: it
    was forked by an earlier agent's zygote, which is gone, so no exit status will be recorded
    (``pid`` 0: it is already gone)."""

    def __init__(self, pid: int, line: ControlLine, *, adopted: bool = False) -> None:
        self.pid = pid
        self.line = line
        self._reaped_by_zygote = not adopted
        try:
            self._fd: int | None = os.pidfd_open(pid) if pid > 0 else None
        except ProcessLookupError:
            self._fd = None  # already gone (and reaped): the status is in the control line

    def _exited(self) -> bool:
        if self._fd is None:
            return True
        return bool(select.select([self._fd], [], [], 0)[0])

    @property
    def returncode(self) -> int | None:
        """Exit status once the process ended (negative: killed by that signal), else None."""
        return self.line.status

    def poll(self) -> int | None:
        """The exit status if the process has ended (waiting briefly for the zygote to reap it)."""
        if not self._exited():
            return None
        deadline = time.monotonic() + (1.0 if self._reaped_by_zygote else 0.0)
        while self.returncode is None and time.monotonic() < deadline:
            time.sleep(0.001)
        code = self.returncode
        return code if code is not None else -signal.SIGKILL  # zygote gone: it cannot have been reaped cleanly

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end of the process; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            if self._fd is not None:
                select.select([self._fd], [], [], 0.05 if left is None else min(left, 0.05))

    def send_signal(self, sig: int) -> None:
        if self._fd is not None and not self._exited():
            signal.pidfd_send_signal(self._fd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Zygote:
    """The parent's handle on a graph's fork server; ``detached``: the graph may outlive this
    process (see the module docstring), else it ends with it."""

    def __init__(self, segment: str, *, preload: tuple[str, ...] = (), timeout: float = 300.0,
                 detached: bool = False) -> None:
        tie = ["--detached"] if detached else ["--owner", str(os.getpid())]
        cmd = [sys.executable, "-m", "micronf.runtime.zygote", segment, *tie]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                      start_new_session=detached)
        self.segment = segment
        self._expect("ready", timeout)
        for module in preload:
            self.preload(module, timeout)

    def _expect(self, word: str, timeout: float) -> str:
        out = self._proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline() if ready else ""
        if not line.startswith(word):
            code = self._proc.poll()
            raise ZygoteError(f"fork server of {self.segment!r} did not answer {word!r} "
                              f"(got {line.strip()!r}, exit status {code})")
        return line[len(word):].strip()

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(line + "\n")
            stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ZygoteError(f"fork server of {self.segment!r} is gone ({exc})") from None

    def preload(self, module: str, timeout: float = 300.0) -> None:
        self._send(f"preload {module}")
        self._expect("ok", timeout)

    def spawn(self, line: ControlLine, entry: str, *args: str) -> Child:
        """Fork a child running ``entry`` (``module:function``) with ``args`` in control ``line``."""
        self._send(" ".join(["spawn", str(line.slot), entry, *args]))
        return Child(int(self._expect("pid", 30.0)), line)

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


# -- the server side ------------------------------------------------------------------------------
def _call(entry: str, args: list[str]) -> int:
    module, _, func = entry.partition(":")
    result = getattr(importlib.import_module(module), func)(*args)
    return int(result or 0)


def serve(segment: str, stdin: IO[str], stdout: IO[str], *, owner: int | None = None) -> int:
    """The zygote's loop (see the module docstring); ``owner``: tied to that process, else detached."""
    if owner is not None:
        exit_with_owner(owner)
    zygote = os.getpid()
    mem = GraphMemory.attach(segment)
    lines: dict[int, ControlLine] = {}  # child pid -> its control line

    def reap(signum: int, frame: FrameType | None) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            line = lines.pop(pid, None)
            if line is not None:
                line.record_exit(os.waitstatus_to_exitcode(status))

    warm_all(mem)
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent stops us by closing stdin
    stdout.write("ready\n")
    stdout.flush()
    for raw in stdin:
        words = raw.split()
        if not words:
            continue
        if words[0] == "preload":
            module = importlib.import_module(words[1])
            warm = getattr(module, "warm", None)
            if warm is not None:
                warm(segment)
            stdout.write("ok\n")
            stdout.flush()
            continue
        if words[0] != "spawn" or len(words) < 3:
            print(f"micronf-zygote: bad request {raw.strip()!r}", file=sys.stderr)
            continue
        line, entry, args = mem.control.line(int(words[1])), words[2], words[3:]
        line.clear_exit()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                if owner is not None:
                    die_with_parent(zygote)
                os.dup2(2, 1)  # our stdout is the protocol pipe
                os.close(0)
                boost_start()
                code = _call(entry, args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        lines[pid] = line
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        stdout.write(f"pid {pid}\n")
        stdout.flush()
    return 0


def main() -> None:
    args = sys.argv[1:]
    try:
        if len(args) == 2 and args[1] == "--detached":
            code = serve(args[0], sys.stdin, sys.stdout)
        elif len(args) == 3 and args[1] == "--owner" and args[2].isdigit():
            code = serve(args[0], sys.stdin, sys.stdout, owner=int(args[2]))
        else:
            print("usage: python -m micronf.runtime.zygote SEGMENT (--owner PID | --detached)", file=sys.stderr)
            code = 2
        sys.stdout.flush()
    except BrokenPipeError:  # whoever started us is gone (or gave up waiting): nothing to answer
        code = 0
    except SegmentNotFoundError as exc:  # the graph was removed before we attached (its owner stopped)
        print(f"zygote: {exc}: nothing to serve", file=sys.stderr)
        code = 1
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown (a second or more with numba loaded on a busy machine)


if __name__ == "__main__":
    main()
