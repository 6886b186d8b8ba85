"""``micronf.dataplane.borrow.borrowed``/``borrowed_pool``: the same memory without NRT reference counting."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.borrow import borrowed, borrowed_pool
from micronf.dataplane.pool import PacketPool, PoolArrays, pkt_frame


@njit(cache=True)
def _write_through(a: npt.NDArray[np.uint8]) -> tuple[int, int]:
    b = borrowed(a)
    v = b[2:5]  # a view of a borrowed array: borrowed too
    v[0] = 99
    return b.shape[0], int(v.sum())


@njit(cache=True)
def _frames(p: PoolArrays, handles: npt.NDArray[np.uint32], out: npt.NDArray[np.uint8]) -> None:
    q = borrowed_pool(p)
    for i in range(handles.shape[0]):
        f = pkt_frame(q, handles[i])
        g = pkt_frame(p, handles[i])
        out[i] = 1 if f.shape[0] == g.shape[0] and np.all(f == g) and f.ctypes.data == g.ctypes.data else 0


def test_borrowed_is_the_same_memory() -> None:
    a = np.arange(10, dtype=np.uint8)
    assert _write_through(a) == (10, 99 + 3 + 4)
    assert a[2] == 99 and a.tolist()[3:] == list(range(3, 10))


def test_borrowed_pool_gives_the_same_frames() -> None:
    pool = PacketPool.local(4)
    handles = pool.alloc(3)
    for k, h in enumerate(handles.tolist()):
        pool.write_frame(h, bytes(range(k, 60 + 7 * k)))
    out = np.zeros(3, dtype=np.uint8)
    _frames(pool.arrays, handles, out)
    assert out.tolist() == [1, 1, 1]


class _Nested(NamedTuple):
    """A stage-like named tuple: arrays, a plain int and a tuple of arrays of different types."""

    a: npt.NDArray[np.int64]
    n: int
    state: tuple[npt.NDArray[np.float64], npt.NDArray[np.int32]]


@njit(cache=True)
def _nested(s: _Nested) -> tuple[int, float]:
    b = borrowed(s)
    b.a[0] += b.n
    b.state[1][1] = 7
    return b.n, float(b.state[0].sum())


def test_borrowed_tuple_borrows_every_member_and_keeps_the_rest() -> None:
    s = _Nested(np.arange(4, dtype=np.int64), 5, (np.full(3, 0.5), np.zeros(2, dtype=np.int32)))
    assert _nested(s) == (5, 1.5)
    assert s.a.tolist() == [5, 1, 2, 3] and s.state[1].tolist() == [0, 7]
