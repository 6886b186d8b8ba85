"""Named shared-memory segments with an owned lifecycle.

Why not ``multiprocessing.shared_memory``: on Python 3.11 the resource tracker of *any* attaching
process unlinks the segment when that process exits, and a live numpy view makes ``close()``
raise. A packet-processing graph needs the opposite: one owner (the agent) creates and unlinks,
µNF processes attach and may die at any time without side effects.

A segment is a file ``micronf-<name>`` under ``/dev/shm`` (or on a hugetlbfs mount with enough
free huge pages) mapped with ``mmap``. It starts with a 4 KiB header: a magic string, a format
version, the owner's pid and process start time (so a dead owner is recognised even after pid
reuse), and a JSON directory of named, page-aligned regions. Attaching reads the directory, so a
process needs only the segment name.

Stale segments (owner dead, e.g. after ``kill -9``) are found by :func:`list_segments` and
removed by :func:`remove_stale` (``micronf shm gc`` on the command line) — but never under
processes that still map them (:func:`segment_users` reads ``/proc/*/maps``): a graph whose agent
died keeps forwarding and a new agent adopts it, so its segment is not garbage. Those processes are
named, and stopped only when asked (``kill=True``, ``micronf shm gc --kill``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import re
import select
import signal
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PREFIX = "micronf-"
MAGIC = b"MICRONF\x01"
VERSION = 1
HEADER_SIZE = 4096
REGION_ALIGN = 4096
DEFAULT_DIR = Path("/dev/shm")
ENV_DIR = "MICRONF_SHM_DIR"

# magic, version, header size, owner pid, owner start ticks, created (ns), total size, directory length
_HEADER = struct.Struct("<8sIIqQqQI")
_OWNER_OFFSET = 16  # owner pid, then its start ticks
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class SegmentError(Exception):
    """A segment cannot be created, attached or read."""


class SegmentNotFoundError(SegmentError):
    """No segment of that name exists in any shared-memory directory."""


@dataclass(frozen=True)
class Region:
    """A named byte range inside a segment."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class SegmentInfo:
    """What :func:`list_segments` reports about one segment file."""

    name: str
    path: Path
    size: int
    owner_pid: int
    created: float
    owner_alive: bool
    valid: bool


def process_start_ticks(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22), 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])


def owner_alive(pid: int, start_ticks: int) -> bool:
    """True when the process that created a segment still runs (pid reuse is detected)."""
    return pid > 0 and process_start_ticks(pid) == start_ticks


def hugetlbfs_mounts() -> list[Path]:
    """Writable hugetlbfs mount points, in ``/proc/mounts`` order."""
    mounts: list[Path] = []
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "hugetlbfs" and os.access(parts[1], os.W_OK):
                mounts.append(Path(parts[1]))
    return mounts


def free_hugepage_bytes() -> int:
    """Bytes of free default-size huge pages (0 when the kernel has none reserved)."""
    free = size_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                free = int(line.split()[1])
            elif line.startswith("Hugepagesize:"):
                size_kb = int(line.split()[1])
    return free * size_kb * 1024


def search_dirs() -> list[Path]:
    """Directories that may hold segments: ``$MICRONF_SHM_DIR`` alone if set, else hugetlbfs + /dev/shm."""
    override = os.environ.get(ENV_DIR)
    if override:
        return [Path(override)]
    return [*hugetlbfs_mounts(), DEFAULT_DIR]


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def _layout(regions: Mapping[str, int]) -> tuple[dict[str, Region], int]:
    offset = HEADER_SIZE
    placed: dict[str, Region] = {}
    for name, size in regions.items():
        if size < 0:
            raise SegmentError(f"region {name!r} has negative size {size}")
        placed[name] = Region(name, offset, size)
        offset = _round_up(offset + max(size, 1), REGION_ALIGN)
    return placed, offset


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise SegmentError(f"invalid segment name {name!r}: use 1-100 characters from [A-Za-z0-9._-]")


class Segment:
    """A mapped shared-memory segment; create with :meth:`create`, open with :meth:`attach`."""

    def __init__(self, name: str, path: Path, mm: mmap.mmap, regions: dict[str, Region], owner: bool) -> None:
        self.name = name
        self.path = path
        self.size = len(mm)
        self.regions = regions
        self.is_owner = owner
        self._mmap: mmap.mmap | None = mm

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, regions: Mapping[str, int], *, mode: int = 0o600) -> Segment:
        """Create, size, zero and map a new segment holding ``regions`` (name -> bytes).

        Tries a hugetlbfs mount first when one has enough free pages, then ``/dev/shm``.
        Fails if a segment of that name exists (use :func:`remove_stale` for leftovers).
        """
        _check_name(name)
        placed, total = _layout(regions)
        directory = json.dumps({r.name: [r.offset, r.size] for r in placed.values()}).encode()
        if _HEADER.size + len(directory) > HEADER_SIZE:
            raise SegmentError(f"segment {name!r}: too many regions for the {HEADER_SIZE}-byte header")
        for candidate in cls._create_dirs(total):
            path = candidate / f"{PREFIX}{name}"
            try:
                mm = cls._create_file(path, total, mode, hugetlb=candidate != DEFAULT_DIR)
            except FileExistsError:
                raise SegmentError(f"segment {name!r} already exists at {path}") from None
            except OSError as exc:
                if exc.errno in (errno.ENOMEM, errno.EINVAL, errno.ENOSPC) and candidate != DEFAULT_DIR:
                    continue  # not enough huge pages after all: fall back to the next directory
                raise SegmentError(f"cannot create segment {name!r} at {path}: {exc}") from exc
            pid = os.getpid()
            header = _HEADER.pack(
                MAGIC, VERSION, HEADER_SIZE, pid, process_start_ticks(pid), time.time_ns(), total,
                len(directory),
            )
            mm[: len(header)] = header
            mm[len(header) : len(header) + len(directory)] = directory
            return cls(name, path, mm, placed, owner=True)
        raise SegmentError(f"no directory to create segment {name!r} in")

    @staticmethod
    def _create_dirs(total: int) -> list[Path]:
        dirs = search_dirs()
        if os.environ.get(ENV_DIR):
            return dirs
        huge_ok = free_hugepage_bytes() >= total
        return [d for d in dirs if d == DEFAULT_DIR or huge_ok]

    @staticmethod
    def _create_file(path: Path, total: int, mode: int, *, hugetlb: bool) -> mmap.mmap:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        try:
            size = _round_up(total, 2 * 1024 * 1024) if hugetlb else total
            os.ftruncate(fd, size)
            return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)

    @classmethod
    def attach(cls, name: str) -> Segment:
        """Map an existing segment by name; a clear error when missing or not a micronf segment."""
        _check_name(name)
        for directory in search_dirs():
            path = directory / f"{PREFIX}{name}"
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            except PermissionError as exc:
                raise SegmentError(f"segment {name!r} at {path}: permission denied ({exc})") from exc
            try:
                size = os.fstat(fd).st_size
                if size < HEADER_SIZE:
                    raise SegmentError(f"{path} is not a micronf segment (only {size} bytes)")
                mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(fd)
            try:
                regions = _read_directory(path, mm[:HEADER_SIZE])
            except SegmentError:
                mm.close()
                raise
            return cls(name, path, mm, regions, owner=False)
        raise SegmentNotFoundError(
            f"no micronf segment named {name!r} (looked in {', '.join(map(str, search_dirs()))})"
        )

    def take_ownership(self) -> None:
        """Record this process as the segment's owner (a new agent adopting a running graph), so that
        ``list_segments`` sees a live owner again and this process may unlink it."""
        pid = os.getpid()
        struct.pack_into("<qQ", self.buffer, _OWNER_OFFSET, pid, process_start_ticks(pid))
        self.is_owner = True

    def close(self) -> None:
        """Unmap. Numpy views still alive keep the mapping until they are garbage collected."""
        mm, self._mmap = self._mmap, None
        if mm is not None:
            with contextlib.suppress(BufferError):
                mm.close()

    def unlink(self) -> None:
        """Remove the segment's name (processes that mapped it keep their mapping)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.is_owner:
            self.unlink()
        self.close()

    # -- access ----------------------------------------------------------------------------
    @property
    def buffer(self) -> mmap.mmap:
        if self._mmap is None:
            raise SegmentError(f"segment {self.name!r} is closed")
        return self._mmap

    def region(self, name: str) -> Region:
        try:
            return self.regions[name]
        except KeyError:
            raise SegmentError(
                f"segment {self.name!r} has no region {name!r} (has: {', '.join(self.regions)})"
            ) from None

    def view(self, name: str, dtype: npt.DTypeLike = np.uint8, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """A numpy view of region ``name`` (zero-copy), optionally reshaped."""
        region = self.region(name)
        itemsize = np.dtype(dtype).itemsize
        arr = np.frombuffer(self.buffer, dtype=dtype, count=region.size // itemsize, offset=region.offset)
        return arr.reshape(shape) if shape is not None else arr


class PrivateMemory:
    """Named regions in this process's private memory, with a :class:`Segment`'s ``region``/``view``
    API: pools and rings formatted here behave exactly like shared ones (unit tests, in-process
    runs) without touching ``/dev/shm``."""

    def __init__(self, regions: Mapping[str, int], name: str = "private") -> None:
        self.name = name
        placed, total = _layout(regions)
        self.regions = placed
        self._buffer = np.zeros(total, dtype=np.uint8)

    def region(self, name: str) -> Region:
        try:
            return self.regions[name]
        except KeyError:
            raise SegmentError(f"private memory has no region {name!r}") from None

    def view(self, name: str, dtype: npt.DTypeLike = np.uint8, shape: tuple[int, ...] | None = None) -> np.ndarray:
        region = self.region(name)
        itemsize = np.dtype(dtype).itemsize
        arr = self._buffer[region.offset : region.offset + region.size // itemsize * itemsize].view(dtype)
        return arr.reshape(shape) if shape is not None else arr


Memory = Segment | PrivateMemory


def _read_directory(path: Path, header: bytes) -> dict[str, Region]:
    magic, version, hsize, _pid, _start, _created, _total, dlen = _HEADER.unpack_from(header)
    if magic != MAGIC:
        raise SegmentError(f"{path} is not a micronf segment (magic {magic!r})")
    if version != VERSION or hsize != HEADER_SIZE:
        raise SegmentError(f"{path}: segment format version {version} is not supported (want {VERSION})")
    raw = json.loads(header[_HEADER.size : _HEADER.size + dlen])
    return {name: Region(name, int(off), int(size)) for name, (off, size) in raw.items()}


def _read_info(path: Path) -> SegmentInfo:
    name = path.name[len(PREFIX) :]
    try:
        with open(path, "rb") as f:
            header = f.read(_HEADER.size)
        size = path.stat().st_size
    except OSError:
        return SegmentInfo(name, path, 0, 0, 0.0, False, False)
    if len(header) < _HEADER.size or header[:8] != MAGIC:
        return SegmentInfo(name, path, size, 0, 0.0, False, False)
    _magic, _v, _h, pid, start, created, _total, _d = _HEADER.unpack(header)
    return SegmentInfo(name, path, size, pid, created / 1e9, owner_alive(pid, start), True)


@dataclass(frozen=True)
class SegmentUser:
    """A live process that maps a segment."""

    pid: int
    command: str


def _command(pid: int) -> str:
    try:
        return " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split())
    except OSError:
        return "?"


def segment_users(paths: Iterable[Path]) -> dict[Path, list[SegmentUser]]:
    """The live processes mapping each of ``paths``, from ``/proc/*/maps`` (processes this user may
    not inspect are not seen; zombies map nothing)."""
    wanted = {str(p): p for p in paths}
    users: dict[Path, list[SegmentUser]] = {p: [] for p in wanted.values()}
    if not wanted:
        return users
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/maps") as f:
                text = f.read()
        except OSError:
            continue
        if not any(w in text for w in wanted):
            continue
        mapped = {line.split(maxsplit=5)[5].removesuffix(" (deleted)") for line in text.splitlines()
                  if line.count(" ") >= 5 and "/" in line}
        for path in mapped & wanted.keys():
            users[wanted[path]].append(SegmentUser(int(entry.name), _command(int(entry.name))))
    return users


def list_segments() -> list[SegmentInfo]:
    """Every ``micronf-*`` file in the segment directories, with its owner's liveness."""
    infos: list[SegmentInfo] = []
    for directory in search_dirs():
        with contextlib.suppress(OSError):
            infos.extend(_read_info(p) for p in sorted(directory.glob(f"{PREFIX}*")))
    return infos


def stale_segments(*, include_invalid: bool = False) -> list[tuple[SegmentInfo, list[SegmentUser]]]:
    """Segments whose creator is dead (and, if asked, files that are not valid segments), each with
    the live processes that still map it."""
    stale = [i for i in list_segments() if (i.valid and not i.owner_alive) or (include_invalid and not i.valid)]
    users = segment_users(i.path for i in stale)
    return [(i, users[i.path]) for i in stale]


def _wait_gone(fds: list[int], seconds: float) -> None:
    """Wait up to ``seconds`` for the processes of pidfds ``fds`` to exit; closes and drops each that did."""
    deadline = time.monotonic() + seconds
    while fds and (left := deadline - time.monotonic()) > 0:
        for fd in select.select(fds, [], [], left)[0]:
            fds.remove(fd)
            os.close(fd)


def stop_processes(pids: Iterable[int], timeout: float = 2.0) -> None:
    """SIGTERM ``pids`` (a µNF stops cleanly on it), SIGKILL what still runs after half of
    ``timeout``, and wait the other half for them to be gone."""
    fds = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fd = os.pidfd_open(pid)
            fds.append(fd)
            signal.pidfd_send_signal(fd, signal.SIGTERM)
    try:
        _wait_gone(fds, timeout / 2)
        for fd in fds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        _wait_gone(fds, timeout / 2)
    finally:
        for fd in fds:
            os.close(fd)


def remove_stale(*, include_invalid: bool = False, kill: bool = False) -> list[SegmentInfo]:
    """Unlink segments whose creator is dead (and, if asked, files that are not valid segments).

    A segment that live processes still map (e.g. a graph whose agent died) stays, unless ``kill``:
    then those processes are stopped first (:func:`stop_processes`)."""
    removed = []
    for info, users in stale_segments(include_invalid=include_invalid):
        if users and kill:
            stop_processes(u.pid for u in users)
            users = segment_users([info.path])[info.path]
        if users:
            continue
        with contextlib.suppress(FileNotFoundError):
            info.path.unlink()
        removed.append(info)
    return removed


def write_json(mem: Memory, region: str, value: Any) -> None:
    """Store ``value`` as JSON in ``region``: an 8-byte length, then the text. The text is written
    before the length, so a reader never sees a length longer than what is there. ``ValueError``
    when it does not fit."""
    raw = json.dumps(value).encode()
    buf = mem.view(region)
    if len(raw) + 8 > buf.shape[0]:
        raise ValueError(f"{region}: {len(raw)} bytes of JSON do not fit in {buf.shape[0] - 8}")
    buf[8 : 8 + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    buf[:8] = np.frombuffer(len(raw).to_bytes(8, "little"), dtype=np.uint8)


def read_json(mem: Memory, region: str) -> Any:
    """The value :func:`write_json` stored in ``region`` (None if nothing was stored)."""
    buf = mem.view(region)
    size = int.from_bytes(bytes(buf[:8]), "little")
    return json.loads(bytes(buf[8 : 8 + size])) if size else None
