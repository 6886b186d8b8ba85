"""Network namespaces and veth pairs for tests, always removed afterwards.

Why: tests of real packet I/O (AF_PACKET backends, the agent's Rx/Tx services) need interfaces
that carry frames, yet must never touch the machine's real interfaces or addresses. A
:class:`NetLab` creates named network namespaces (``ip netns add``; names carry the pid, so
concurrent test sessions never collide) and veth pairs between them, and deletes every one of
them on exit, whatever happened (deleting a namespace destroys the veths in it, and so their
peers). IPv6 is disabled in each namespace so the kernel sends no router solicitations or MLD
reports of its own: a test sees exactly the frames it sent.

Use::

    from tests import netns
    from tests.netns import NetLab, send_frames

    lab = netns.lab  # the pytest fixture (assigned, not imported, so ruff sees it used)

    def test_x(lab: NetLab) -> None:
        a, b = lab.netns(2)
        link = lab.veth(a, b, addr_a="10.0.0.1/24", addr_b="10.0.0.2/24")
        lab.call(a, send_frames, link.if_a, [frame1, frame2])   # a Python callable inside netns a
        lab.run(b, "ip", "-s", "link")                           # a command inside netns b

:meth:`NetLab.call` / :meth:`NetLab.spawn` fork a child that joins the namespace (``setns``)
before running the callable, so anything it opens (sockets, scapy's ``sendp``) lives there; the
result comes back pickled. Every subprocess and child has a timeout.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
_FORK = mp.get_context("fork")


def netns_unavailable() -> str | None:
    """Why namespace tests cannot run here (``None`` when they can)."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need iproute2's `ip`"
    return None


def require_netns() -> None:
    """Skip the calling test when namespaces and veth pairs cannot be created."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


def _ip(*args: str, timeout: float = 30) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def join_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (children inherit it)."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def namespaces_with_prefix(prefix: str) -> list[str]:
    """Named namespaces whose name starts with ``prefix`` (leak checks)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


@dataclass(frozen=True)
class Veth:
    """One veth pair: ``if_a`` in namespace ``ns_a`` and ``if_b`` in ``ns_b`` (``None`` = the test's own)."""

    ns_a: str | None
    if_a: str
    ns_b: str | None
    if_b: str
    mac_a: str
    mac_b: str


def _child(conn: Connection, ns: str | None, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        if ns is not None:
            join_netns(ns)
        conn.send((True, fn(*args)))
    except BaseException as exc:  # sent to the parent, which re-raises it with the traceback
        conn.send((False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class NsProcess:
    """A callable running in a forked child inside a namespace; :meth:`result` waits for it."""

    def __init__(self, ns: str | None, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._recv, send = _FORK.Pipe(duplex=False)
        self.name = getattr(fn, "__name__", repr(fn))
        self.process = _FORK.Process(target=_child, args=(send, ns, fn, args), daemon=True)
        self.process.start()
        send.close()

    def result(self, timeout: float = 60) -> Any:
        """The callable's return value; its exception (as ``RuntimeError``) or a timeout raise."""
        try:
            if not self._recv.poll(timeout):
                raise TimeoutError(f"{self.name} did not finish within {timeout} s")
            ok, value = self._recv.recv()
        except EOFError:
            ok, value = False, f"{self.name} died with exit code {self.process.exitcode}"
        finally:
            self.kill()
        if not ok:
            raise RuntimeError(f"{self.name} failed in its namespace: {value}")
        return value

    def kill(self) -> None:
        """Stop the child if it still runs (idempotent)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)
        self._recv.close()


class NetLab:
    """Namespaces and veth pairs owned by one test; everything goes on :meth:`close`."""

    def __init__(self, tag: str = "t") -> None:
        if not tag.isalnum() or len(tag) > 4:
            raise ValueError(f"tag must be 1-4 alphanumeric characters, got {tag!r}")
        self.prefix = f"mnf{tag}-{os.getpid()}-"
        self._ifprefix = f"m{tag}{os.getpid()}"[:10]
        self._namespaces: list[str] = []
        self._root_links: list[str] = []
        self._children: list[NsProcess] = []
        self._count = 0

    def _next(self) -> int:
        self._count += 1
        return self._count

    def netns(self, count: int = 1) -> list[str]:
        """Create ``count`` namespaces (loopback up, IPv6 off); returns their names."""
        names = []
        for _ in range(count):
            name = f"{self.prefix}{self._next()}"
            _ip("netns", "add", name)
            self._namespaces.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
            self.run(name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1")
            names.append(name)
        return names

    def veth(self, ns_a: str | None, ns_b: str | None, *, addr_a: str | None = None, addr_b: str | None = None,
             mtu: int | None = None) -> Veth:
        """A veth pair between ``ns_a`` and ``ns_b`` (``None``: the test's own namespace), both ends up.

        ``addr_a``/``addr_b`` are optional CIDR addresses. An end in the test's namespace is
        deleted on :meth:`close`; the ends in lab namespaces go with them.
        """
        k = self._next()
        if_a, if_b = f"{self._ifprefix}v{k}a", f"{self._ifprefix}v{k}b"
        where_a = ["netns", ns_a] if ns_a else []
        where_b = ["netns", ns_b] if ns_b else []
        _ip("link", "add", if_a, *where_a, "type", "veth", "peer", "name", if_b, *where_b)
        if ns_a is None:
            self._root_links.append(if_a)
        elif ns_b is None:
            self._root_links.append(if_b)
        macs = []
        for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
            at = ["-n", ns] if ns else []
            if mtu is not None:
                _ip(*at, "link", "set", ifname, "mtu", str(mtu))
            if addr is not None:
                _ip(*at, "addr", "add", addr, "dev", ifname)
            _ip(*at, "link", "set", ifname, "up")
            macs.append(_ip(*at, "-br", "link", "show", ifname).split()[2])
        return Veth(ns_a, if_a, ns_b, if_b, macs[0], macs[1])

    def run(
        self, ns: str | None, *cmd: str, timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside ``ns`` (``ip netns exec``), output captured."""
        full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(full)}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def spawn(self, ns: str | None, fn: Callable[..., Any], *args: Any) -> NsProcess:
        """Start ``fn(*args)`` in a forked child inside ``ns``; killed on :meth:`close` if still running."""
        child = NsProcess(ns, fn, args)
        self._children.append(child)
        return child

    def call(self, ns: str | None, fn: Callable[..., Any], *args: Any, timeout: float = 60) -> Any:
        """``fn(*args)`` run inside ``ns`` (in a forked child); returns its (picklable) result."""
        return self.spawn(ns, fn, *args).result(timeout)

    def link_stats(self, ns: str | None, ifname: str) -> dict[str, int]:
        """The kernel's counters of an interface (``ip -s link``): rx/tx packets, bytes, dropped."""
        import json

        at = ["-n", ns] if ns else []
        info = json.loads(_ip(*at, "-s", "-j", "link", "show", ifname))[0]["stats64"]
        return {f"{d}_{k}": int(v) for d in ("rx", "tx") for k, v in info[d].items() if isinstance(v, int)}

    def close(self) -> None:
        """Kill children, delete every namespace and root-namespace veth of this lab (idempotent)."""
        for child in self._children:
            child.kill()
        self._children.clear()
        problems = []
        for link in self._root_links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30, check=False)
        self._root_links.clear()
        for name in self._namespaces:
            try:
                _ip("netns", "del", name)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                problems.append(str(exc))
        self._namespaces.clear()
        if problems:
            raise RuntimeError("NetLab cleanup: " + "; ".join(problems))

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def lab() -> Iterator[NetLab]:
    """A :class:`NetLab` for one test (skips when not root or without ``ip``)."""
    require_netns()
    with NetLab() as netlab:
        yield netlab


def send_frames(iface: str, frames: Sequence[bytes], pace_every: int = 0, pace_s: float = 0.0) -> int:
    """Send ``frames`` out of ``iface`` with a plain raw socket, one ``send`` each; returns the count.

    Pacing: sleep ``pace_s`` after every ``pace_every`` frames (0 = no pacing). Meant for
    :meth:`NetLab.call`/:meth:`NetLab.spawn`, i.e. inside the interface's namespace.
    """
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        sock.bind((iface, 0))
        for i, frame in enumerate(frames, 1):
            sock.send(frame)
            if pace_every and i % pace_every == 0:
                time.sleep(pace_s)
    return len(frames)
