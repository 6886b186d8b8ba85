"""Unprivileged µNF processes: one uid per graph, only the capabilities a process needs (paper §VIII).

The agent runs as root (raw sockets, real-time scheduling, CPU pinning of others), but the µNFs it
starts are code that may come from anyone (``$MICRONF_NF_MODULES``) and must not reach another
graph's packets. So when the agent is root:

- :func:`assign_uid` gives each graph's segment file an owner of its own, the lowest free uid of
  ``MICRONF_UID_BASE`` .. + :data:`UID_SLOTS` (default base :data:`DEFAULT_UID_BASE`; no account is
  needed for it), mode 0600: that uid can open its graph's segment, no other unprivileged uid can,
  and root (the agent) still can. The uid is free again once the segment is removed.
- :func:`drop_for_graph`, called by the µNF stage (``micronf.runtime.unf``) in each process the
  graph's zygote forks, before any µNF code runs: when the segment belongs to such a uid, the
  process becomes that uid and gid (no supplementary groups) and keeps only what it needs: nothing,
  or ``CAP_SYS_NICE`` when its scheduling policy is real-time (it sets that itself). It also gets
  ``no_new_privs`` and an emptied capability bounding set, so nothing it executes regains
  privileges. The zygote has already mapped the segment, imported every module and loaded every hot
  loop (from numba's cache, which stays root's): the process needs no file of root's afterwards, and
  compiles nothing.
- :func:`drop_for_service`, called by the Rx and Tx service stages (``micronf.services``) once
  they have opened what only root may open — the segment, capture files in the agent's data
  directory (already confined, see ``micronf.agent.files``), AF_PACKET sockets and their mmap'ed
  rings, sockets created in another network namespace — and set their CPU and scheduling policy:
  the same uid, no capabilities at all (an open packet socket sends and receives without
  ``CAP_NET_RAW``, and a policy already set needs no ``CAP_SYS_NICE`` to stay), the same empty
  bounding set and ``no_new_privs``. Every hot loop they run afterwards (AF_PACKET and pcap
  kernels included) was loaded by the zygote or by the backend's open, before the drop.

Not root (tests, ``micronf run`` as a user), or ``MICRONF_UID_BASE=off``: nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from micronf.runtime.stage import GraphMemory, read_layout

DEFAULT_UID_BASE = 200_000
UID_SLOTS = 10_000
UID_BASE_ENV = "MICRONF_UID_BASE"

CAP_SYS_NICE = 23
_PR_GET_PDEATHSIG, _PR_SET_PDEATHSIG = 2, 1
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_CAP_VERSION_3 = 0x20080522


class PrivilegeError(OSError):
    """The process could not become its graph's uid (it does not run the µNF then)."""


def uid_base() -> int | None:
    """The first uid for graphs (``$MICRONF_UID_BASE``), None when graphs keep root's: not root, or ``off``."""
    text = os.environ.get(UID_BASE_ENV, "").strip()
    if os.geteuid() != 0 or text.lower() in ("off", "0", "no", "false"):
        return None
    try:
        base = int(text) if text else DEFAULT_UID_BASE
    except ValueError:
        raise ValueError(f"${UID_BASE_ENV}={text!r}: expected a uid (e.g. {DEFAULT_UID_BASE}) or 'off'") from None
    if not 0 < base <= 2**32 - 2 - UID_SLOTS:
        raise ValueError(f"${UID_BASE_ENV}={base}: expected 1..{2**32 - 2 - UID_SLOTS}")
    return base


def assign_uid(segment: Path, base: int) -> int:
    """Give the segment file ``segment`` (mode 0600) the lowest uid of ``base`` .. ``base + UID_SLOTS``
    that owns no other file in its directory, as owner and group; returns it."""
    with open(segment.parent / ".micronf-uids.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two graphs created at once do not pick the same uid
        used = set()
        for other in segment.parent.iterdir():
            with contextlib.suppress(OSError):
                used.add(other.stat().st_uid)
        uid = next((u for u in range(base, base + UID_SLOTS) if u not in used), None)
        if uid is None:
            raise PrivilegeError(f"no free uid for a graph in {base}..{base + UID_SLOTS - 1} ({UID_SLOTS} graphs run)")
        os.chown(segment, uid, uid)
        os.chmod(segment, 0o600)
    return uid


def graph_uid(mem: GraphMemory) -> int | None:
    """The uid the processes of the graph in ``mem`` become: its segment's owner; None when they keep
    ours (we are not root, or the segment is root's: ``MICRONF_UID_BASE=off``)."""
    if os.geteuid() != 0:
        return None
    return mem.seg.path.stat().st_uid or None


def drop_for_graph(mem: GraphMemory, process: int) -> None:
    """In µNF process ``process`` of the graph in ``mem``, forked by the graph's zygote, before it runs:
    become the graph's uid if its segment has one (see the module docstring)."""
    uid = graph_uid(mem)
    if uid is None:
        return
    plans = read_layout(mem.seg).processes  # the current layout: a scale-out adds processes
    realtime = not 0 <= process < len(plans) or plans[process].policy != "other"  # unknown: keep the option
    drop(uid, uid, keep=[CAP_SYS_NICE] if realtime else [])


def drop_for_service(mem: GraphMemory) -> None:
    """In an I/O service (Rx, Tx) of the graph in ``mem``, once its files and sockets are open and its
    scheduling is set: become the graph's uid, with no capabilities (see the module docstring)."""
    uid = graph_uid(mem)
    if uid is not None:
        drop(uid, uid)


def drop(uid: int, gid: int, keep: Sequence[int] = ()) -> None:
    """Become ``uid``/``gid`` (no supplementary groups) with exactly the capabilities ``keep``
    (effective and permitted; none inheritable, none in the bounding set beyond them), and
    ``no_new_privs``. The parent-death signal, which a change of credentials clears, is kept."""
    libc = ctypes.CDLL(None, use_errno=True)

    def prctl(option: int, arg: int | ctypes._Pointer[ctypes.c_int] = 0) -> int:
        result = int(libc.prctl(option, arg, 0, 0, 0))
        if result < 0:
            err = ctypes.get_errno()
            raise PrivilegeError(err, f"prctl({option}): {os.strerror(err)}")
        return result

    deathsig = ctypes.c_int(0)
    prctl(_PR_GET_PDEATHSIG, ctypes.pointer(deathsig))
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        if cap not in keep:
            prctl(_PR_CAPBSET_DROP, cap)
    prctl(_PR_SET_KEEPCAPS, 1)  # the permitted set survives the uid change; the effective one is cleared
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise PrivilegeError(exc.errno, f"cannot become uid {uid}: {exc.strerror}") from None
    mask = sum(1 << cap for cap in keep)
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0, mask >> 32, mask >> 32, 0)
    if libc.capset(header, data) != 0:  # struct __user_cap_data_struct[2]: effective, permitted, inheritable
        err = ctypes.get_errno()
        raise PrivilegeError(err, f"capset: {os.strerror(err)}")
    prctl(_PR_SET_KEEPCAPS, 0)
    prctl(_PR_SET_NO_NEW_PRIVS, 1)
    if deathsig.value:
        prctl(_PR_SET_PDEATHSIG, deathsig.value)
