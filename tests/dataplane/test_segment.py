"""Segment lifecycle: create / attach / unlink, clear errors, and stale-segment cleanup after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from micronf.dataplane.segment import (
    HEADER_SIZE,
    PREFIX,
    Segment,
    SegmentError,
    SegmentNotFoundError,
    list_segments,
    remove_stale,
    stale_segments,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def test_create_attach_share_and_unlink(seg_name: str) -> None:
    with Segment.create(seg_name, {"a": 100, "b": 8192}) as seg:
        assert seg.path == Path("/dev/shm") / f"{PREFIX}{seg_name}"
        assert seg.path.stat().st_mode & 0o777 == 0o600
        a = seg.view("a")
        b = seg.view("b", np.int64)
        assert a.shape == (100,) and b.shape == (1024,)
        assert seg.region("a").offset % 4096 == 0 and seg.region("b").offset >= HEADER_SIZE
        a[:] = np.arange(100, dtype=np.uint8)
        other = Segment.attach(seg_name)
        assert not other.is_owner
        assert other.regions == seg.regions
        assert np.array_equal(other.view("a"), np.arange(100, dtype=np.uint8))
        other.view("b", np.int64)[5] = 77  # writes through the other mapping are seen here
        assert b[5] == 77
        with pytest.raises(SegmentError, match="has no region 'c'"):
            other.region("c")
        other.close()
        del a, b
    assert not seg.path.exists()


def test_create_twice_is_an_error(seg_name: str) -> None:
    with Segment.create(seg_name, {"a": 1}), pytest.raises(SegmentError, match="already exists"):
        Segment.create(seg_name, {"a": 1})


def test_attach_missing_names_the_segment(seg_name: str) -> None:
    with pytest.raises(SegmentNotFoundError, match=f"no micronf segment named '{seg_name}'"):
        Segment.attach(seg_name)


@pytest.mark.parametrize("content", [b"", b"x" * 100, b"NOTMAGIC" + b"\0" * 5000])
def test_attach_foreign_file_is_a_clear_error(seg_name: str, content: bytes) -> None:
    path = Path("/dev/shm") / f"{PREFIX}{seg_name}"
    path.write_bytes(content)
    try:
        with pytest.raises(SegmentError, match="is not a micronf segment"):
            Segment.attach(seg_name)
        info = next(i for i in list_segments() if i.name == seg_name)
        assert not info.valid
    finally:
        path.unlink()


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 101, "sp ace"])
def test_invalid_names_are_rejected(bad: str) -> None:
    with pytest.raises(SegmentError, match="invalid segment name"):
        Segment.create(bad, {"a": 1})


def test_kill_9_creator_leaves_a_stale_segment_that_gc_removes(seg_name: str) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from micronf.dataplane.segment import Segment
        seg = Segment.create({seg_name!r}, {{"data": 1 << 20}})
        seg.view("data")[:4] = [1, 2, 3, 4]
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        live = next(i for i in list_segments() if i.name == seg_name)
        assert live.valid and live.owner_alive and live.owner_pid == proc.pid
        assert seg_name not in {i.name for i in remove_stale()}  # a live owner's segment stays
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    dead = next(i for i in list_segments() if i.name == seg_name)
    assert dead.valid and not dead.owner_alive
    # the data survives the crash: an operator could still inspect it before collecting
    survivor = Segment.attach(seg_name)
    assert list(survivor.view("data")[:4]) == [1, 2, 3, 4]
    survivor.close()
    removed = remove_stale()
    assert seg_name in {i.name for i in removed}
    assert not (Path("/dev/shm") / f"{PREFIX}{seg_name}").exists()


def test_pid_reuse_is_not_mistaken_for_a_live_owner(seg_name: str) -> None:
    """The owner's start time is recorded: a different process with the same pid is 'dead owner'."""
    with Segment.create(seg_name, {"a": 1}) as seg:
        raw = bytearray(seg.buffer[:64])
        start_field = slice(24, 32)  # owner start ticks in the header
        seg.buffer[start_field] = (int.from_bytes(raw[start_field], "little") + 1).to_bytes(8, "little")
        info = next(i for i in list_segments() if i.name == seg_name)
        assert info.owner_pid == os.getpid() and not info.owner_alive


def test_env_dir_override(seg_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICRONF_SHM_DIR", str(tmp_path))
    with Segment.create(seg_name, {"a": 10}) as seg:
        assert seg.path.parent == tmp_path
        assert Segment.attach(seg_name).path == seg.path
    assert not any(tmp_path.iterdir())


def test_close_with_live_views_does_not_raise(seg_name: str) -> None:
    with Segment.create(seg_name, {"a": 10}) as seg:
        view = seg.view("a")
        seg.close()
        view[0] = 1  # the mapping stays valid while the view lives
        with pytest.raises(SegmentError, match="is closed"):
            seg.view("a")


def _python(code: str) -> subprocess.Popen[bytes]:
    """A Python process running ``code``, which prints 'ready' once set up."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def test_gc_never_removes_a_segment_live_processes_map(seg_name: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead creator is not enough: a process still mapping the segment (a graph whose agent died)
    keeps it; gc names that process, and only --kill stops it and removes the segment."""
    monkeypatch.setenv("MICRONF_SHM_DIR", str(tmp_path))  # this test's gc sees only this test's segment
    creator = _python(f"""
        import time
        from micronf.dataplane.segment import Segment
        seg = Segment.create({seg_name!r}, {{"data": 1 << 16}})
        print("ready", flush=True)
        time.sleep(120)
    """)
    user = _python(f"""
        import time
        from micronf.dataplane.segment import Segment
        seg = Segment.attach({seg_name!r})
        view = seg.view("data")
        print("ready", flush=True)
        time.sleep(120)
    """)
    path = tmp_path / f"{PREFIX}{seg_name}"
    try:
        os.kill(creator.pid, signal.SIGKILL)
        creator.wait()
        [(info, users)] = stale_segments()
        assert info.path == path and not info.owner_alive
        assert [u.pid for u in users] == [user.pid] and "Segment.attach" in users[0].command
        assert remove_stale() == [] and path.exists()
        env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        gc = subprocess.run([sys.executable, "-m", "micronf", "shm", "gc"], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
        assert f"{user.pid} (" in gc.stdout and "0 segment(s) removed" in gc.stdout, gc.stdout
        ls = subprocess.run([sys.executable, "-m", "micronf", "shm", "ls"], env={**env, "COLUMNS": "250"},
                            capture_output=True, text=True, timeout=60, check=True)
        assert "owner gone, mapped by 1 process(es)" in ls.stdout, ls.stdout
        assert path.exists() and user.poll() is None
        gc = subprocess.run([sys.executable, "-m", "micronf", "shm", "gc", "--kill"], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
        assert "1 segment(s) removed" in gc.stdout, gc.stdout
        assert user.wait(timeout=5) == -signal.SIGTERM
        assert not path.exists()
    finally:
        for proc in (creator, user):
            proc.kill()
            proc.wait()
        path.unlink(missing_ok=True)
