"""Read and write a µNF's port table (layout in ``micronf.ports.base``).

The version word is a seqlock: a writer (the graph builder, the agent when it scales out) calls
``begin()`` (version becomes odd), changes rows, then ``publish()`` (even again), both release
stores. The µNF process compares versions between two compiled calls and, when it changed, takes
a ``snapshot()``: a private copy read only while the version is even and unchanged across the
read, so it never sees a half-written table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from micronf.dataplane.atomics import py_load_acquire, py_store_release
from micronf.ports.base import (
    EG_BASE,
    EG_COLS,
    EG_KIND,
    EG_LOCAL,
    EG_MARK_ONLY,
    EG_MARKER,
    EG_NRINGS,
    EG_ON_FULL,
    EG_RING0,
    FULL_WAIT,
    IN_BASE,
    IN_COLS,
    MAX_EG,
    MAX_FANOUT,
    MAX_IN,
    MAX_VERDICTS,
    ROUTE_BASE,
    ROUTE_UNCONNECTED,
    TABLE_WORDS,
    V_N_EG,
    V_N_IN,
    V_N_VERDICTS,
    V_VERSION,
)

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PortSnapshot:
    """A private copy of a port table, as the hot loop uses it."""

    version: int
    in_tab: I64
    eg_tab: I64
    route: I64


class PortTable:
    """A port table over an int64 array of ``TABLE_WORDS`` (shared memory, or private in tests)."""

    def __init__(self, words: I64) -> None:
        if words.shape[0] < TABLE_WORDS:
            raise ValueError(f"a port table needs {TABLE_WORDS} words, got {words.shape[0]}")
        self.words = words

    @classmethod
    def private(cls) -> PortTable:
        return cls(np.zeros(TABLE_WORDS, dtype=np.int64))

    def init(self, n_in: int, n_eg: int, n_verdicts: int) -> None:
        """Reset: ``n_in`` ingress and ``n_eg`` egress ports, every verdict unconnected (call within
        ``begin()``/``publish()`` when the µNF may be running)."""
        if not 0 <= n_in <= MAX_IN or not 0 <= n_eg <= MAX_EG or not 1 <= n_verdicts <= MAX_VERDICTS:
            raise ValueError(f"port table limits: {MAX_IN} ingress, {MAX_EG} egress, {MAX_VERDICTS} verdicts "
                             f"(asked {n_in}, {n_eg}, {n_verdicts})")
        version = int(self.words[V_VERSION])
        self.words[:] = 0
        self.words[V_VERSION] = version
        self.words[V_N_IN], self.words[V_N_EG], self.words[V_N_VERDICTS] = n_in, n_eg, n_verdicts
        self.words[ROUTE_BASE : ROUTE_BASE + MAX_IN * MAX_VERDICTS] = ROUTE_UNCONNECTED

    @property
    def n_in(self) -> int:
        return int(self.words[V_N_IN])

    @property
    def n_eg(self) -> int:
        return int(self.words[V_N_EG])

    @property
    def n_verdicts(self) -> int:
        return int(self.words[V_N_VERDICTS])

    def set_ingress(self, i: int, kind: int, ring: int, need: int = 0) -> None:
        self._check(i, self.n_in, "ingress")
        base = IN_BASE + i * IN_COLS
        self.words[base : base + IN_COLS] = (kind, ring, need)

    def set_egress(self, e: int, kind: int, rings: Sequence[int], on_full: int) -> None:
        """Point egress ``e`` at ``rings`` (one for PP/marker, several for branch/LB, none for mark-only)."""
        self._check(e, self.n_eg, "egress")
        if len(rings) > MAX_FANOUT:
            raise ValueError(f"an egress fans out to at most {MAX_FANOUT} rings, got {len(rings)}")
        if kind == EG_MARKER:
            on_full = FULL_WAIT  # a marked packet may still be read by other branches: never drop it
        if kind not in (EG_MARK_ONLY, EG_LOCAL) and not rings:
            raise ValueError(f"egress {e} of kind {kind} needs at least one ring")
        base = EG_BASE + e * EG_COLS
        row = self.words[base : base + EG_COLS]
        row[:] = 0
        row[EG_KIND], row[EG_ON_FULL], row[EG_NRINGS] = kind, on_full, len(rings)
        row[EG_RING0 : EG_RING0 + len(rings)] = rings

    def egress(self, e: int) -> tuple[int, int, list[int]]:
        """(kind, on_full, rings) of egress ``e``."""
        row = self.words[EG_BASE + e * EG_COLS : EG_BASE + (e + 1) * EG_COLS]
        return int(row[EG_KIND]), int(row[EG_ON_FULL]), [int(r) for r in row[EG_RING0 : EG_RING0 + row[EG_NRINGS]]]

    def set_route(self, ingress: int, column: int, value: int) -> None:
        """Packets from ``ingress`` with verdict ``column`` go to egress ``value`` (or ROUTE_*)."""
        self._check(ingress, max(self.n_in, 1), "ingress")
        self._check(column, self.n_verdicts, "verdict column")
        if value >= self.n_eg:
            raise ValueError(f"route to egress {value}, but only {self.n_eg} egress ports")
        self.words[ROUTE_BASE + ingress * MAX_VERDICTS + column] = value

    def begin(self) -> None:
        """Start a change: readers wait (or keep their old copy) until :meth:`publish`."""
        version = int(self.words[V_VERSION])
        if version % 2 == 0:
            py_store_release(self.words, V_VERSION, version + 1)

    def publish(self) -> int:
        """Make the changes visible to the µNF (version even again, release). Returns the new version."""
        version = int(self.words[V_VERSION])
        version += 1 if version % 2 else 2
        py_store_release(self.words, V_VERSION, version)
        return version

    def version(self) -> int:
        return py_load_acquire(self.words, V_VERSION)

    def snapshot(self) -> PortSnapshot:
        """A consistent private copy (retried if a writer published meanwhile)."""
        while True:
            version = self.version()
            if version % 2:  # a writer is in the middle of a change
                time.sleep(0.0001)
                continue
            n_in, n_eg, nv = self.n_in, self.n_eg, self.n_verdicts
            in_tab = self.words[IN_BASE : IN_BASE + n_in * IN_COLS].reshape(n_in, IN_COLS).copy()
            eg_tab = self.words[EG_BASE : EG_BASE + n_eg * EG_COLS].reshape(n_eg, EG_COLS).copy()
            rows = max(n_in, 1)
            route = self.words[ROUTE_BASE : ROUTE_BASE + rows * MAX_VERDICTS].reshape(rows, MAX_VERDICTS)[:, :nv].copy()
            if self.version() == version:
                return PortSnapshot(version, in_tab, eg_tab, route)

    @staticmethod
    def _check(i: int, n: int, what: str) -> None:
        if not 0 <= i < n:
            raise ValueError(f"{what} {i} out of range 0..{n - 1}")
