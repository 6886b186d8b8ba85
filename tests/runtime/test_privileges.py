"""Unprivileged µNF processes (paper §VIII): as root, each graph's µNFs run as a uid of their own with
no capabilities they do not need, and cannot open another graph's segment; a pipeline still
forwards every packet. Not root: nothing changes (the rest of the suite).

The forwarding check also shows that a dropped µNF needs none of root's files: on a machine whose
Python, numba and numba cache live under /root (mode 0700), as on the test machine, the process
could not import or load anything itself; it runs what its zygote (root) loaded before the fork."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from micronf.runtime.graph import chain_spec, plan
from micronf.runtime.launch import GraphRuntime
from micronf.runtime.privileges import CAP_SYS_NICE, DEFAULT_UID_BASE, UID_BASE_ENV, UID_SLOTS, drop, uid_base
from micronf.runtime.scaling import scale_out
from tests.graphio import pump

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it starts µNFs as other uids")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _try_open(path: Path, uid: int) -> str:
    """In a forked child that became ``uid`` (as a µNF does): open ``path`` read-write; what happened."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        result = b"?"
        try:
            os.close(r)
            drop(uid, uid)
            os.close(os.open(path, os.O_RDWR))
            result = b"opened"
        except PermissionError:
            result = b"PermissionError"
        except BaseException as exc:  # anything else is a failure the parent reports
            result = repr(exc).encode()
        finally:
            os.write(w, result)
            os._exit(0)
    os.close(w)
    try:
        return os.read(r, 200).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)


@pytest.mark.timeout(300)
def test_each_graph_has_its_uid_and_cannot_open_another_graphs_segment(
        monkeypatch: pytest.MonkeyPatch, seg_name: str) -> None:
    monkeypatch.delenv(UID_BASE_ENV, raising=False)
    layout = plan(chain_spec([("MacSwapper", {}), ("IPTtlDecrementer", {})]), capture_drops=True, on_full="wait")
    with GraphRuntime(layout, segment=f"{seg_name}-a") as a, GraphRuntime(layout, segment=f"{seg_name}-b") as b:
        assert a.seg is not None and b.seg is not None and a.uid is not None and b.uid is not None
        assert a.uid != b.uid and all(DEFAULT_UID_BASE <= u < DEFAULT_UID_BASE + UID_SLOTS for u in (a.uid, b.uid))
        for g in (a, b):
            st = g.seg.path.stat()  # type: ignore[union-attr]
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (g.uid, g.uid, 0o600)
            for pid in g.pids():
                status = _status(pid)
                assert status["Uid"].split() == [str(g.uid)] * 4 and status["Gid"].split() == [str(g.uid)] * 4
                assert status["Groups"] == ""
                assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0  # policy "other"
                assert int(status["CapBnd"], 16) == 0 and status["NoNewPrivs"] == "1"
        assert _try_open(b.seg.path, a.uid) == "PermissionError"  # graph A's uid, graph B's segment
        assert _try_open(a.seg.path, b.uid) == "PermissionError"
        assert _try_open(a.seg.path, a.uid) == "opened"  # its own: yes
        scale_out(a, "MacSwapper")  # a process started later (a new index in the layout) drops too
        assert _status(a.procs[-1].pid)["Uid"].split() == [str(a.uid)] * 4

        total = 3000  # the dropped µNFs still forward, and every packet is accounted for
        frames = [bytes(Ether() / IP(ttl=1 + i % 3) / UDP(sport=i)) for i in range(total)]
        out = pump(a, frames, timeout=120)
        assert a.mem is not None
        in_flight = a.mem.pool.stats().in_use
        assert len(out["expired"]) == total // 3  # ttl 1 expires, 2 and 3 go on
        assert total == sum(len(v) for v in out.values()) + a.freed_inside() + in_flight
        assert len(out["out"]) == total - total // 3


def test_a_realtime_unf_keeps_only_cap_sys_nice() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            drop(DEFAULT_UID_BASE + UID_SLOTS - 1, DEFAULT_UID_BASE + UID_SLOTS - 1, keep=[CAP_SYS_NICE])
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # what the kept capability is for
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # (no loop runs meanwhile)
            os.write(w, Path("/proc/self/status").read_bytes())
        finally:
            os._exit(0)
    os.close(w)
    text = b""
    while chunk := os.read(r, 4096):
        text += chunk
    os.close(r)
    os.waitpid(pid, 0)
    status = {k: v.strip() for k, _, v in (line.partition(":") for line in text.decode().splitlines())}
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 1 << CAP_SYS_NICE
    assert int(status["CapInh"], 16) == 0 and int(status["CapBnd"], 16) == 1 << CAP_SYS_NICE


@pytest.mark.timeout(120)
def test_off_keeps_root(monkeypatch: pytest.MonkeyPatch, seg_name: str) -> None:
    monkeypatch.setenv(UID_BASE_ENV, "off")
    with GraphRuntime(plan(chain_spec([("MacSwapper", {})])), segment=seg_name) as g:
        assert g.uid is None and g.seg is not None and g.seg.path.stat().st_uid == 0
        assert _status(g.pids()[0])["Uid"].split() == ["0"] * 4


def test_uid_base_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UID_BASE_ENV, "300000")
    assert uid_base() == 300_000
    monkeypatch.setenv(UID_BASE_ENV, "lots")
    with pytest.raises(ValueError, match="MICRONF_UID_BASE='lots': expected a uid"):
        uid_base()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: graphs keep the caller's uid
    monkeypatch.delenv(UID_BASE_ENV)
    assert uid_base() is None
