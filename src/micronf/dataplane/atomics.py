"""Atomics, fences, prefetch, cycle counter and ``sched_yield``, callable from numba code.

Why: the rings and the parallel-sync counter live in memory shared by several processes.
Correctness needs explicit memory ordering (release when publishing an index, acquire when
observing one); a plain load in a polling loop may even be hoisted out of the loop by LLVM and
spin forever. These intrinsics emit LLVM atomic instructions directly, so on x86 an acquire load
or a release store is a plain ``mov`` (free) while ``fetch_add``/``cas``/``fence_seq_cst`` cost
a locked instruction (~5 ns): use those once per burst, not per packet.

All functions take a 1-D numpy array and an element index, so any shared-memory region viewed
as ``uint32``/``int64`` works. They compile with ``cache=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_INT_BITS = {types.int32: 32, types.uint32: 32, types.int64: 64, types.uint64: 64}


def _elem_ptr(context: Any, builder: Any, aryty: Any, ary: Any, idx: Any) -> Any:
    """Pointer to ``ary[idx]`` (no bounds check: callers index control words they laid out)."""
    array = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
        context, builder, aryty, array, [idx], wraparound=False
    )


def _check_int_array(aryty: Any) -> int:
    if not isinstance(aryty, types.Array) or aryty.dtype not in _INT_BITS or aryty.ndim != 1:
        raise TypeError(f"expected a 1-D int32/uint32/int64/uint64 array, got {aryty}")
    return _INT_BITS[aryty.dtype]


@intrinsic
def _load_acquire(typingctx: Any, ary: Any, idx: Any) -> Any:
    """``ary[idx]`` loaded with acquire ordering (observe what the publisher wrote before)."""
    bits = _check_int_array(ary)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", bits // 8)

    return ary.dtype(ary, idx), codegen


@intrinsic
def _store_release(typingctx: Any, ary: Any, idx: Any, val: Any) -> Any:
    """``ary[idx] = val`` with release ordering (publish everything written before)."""
    bits = _check_int_array(ary)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        value = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        builder.store_atomic(value, ptr, "release", bits // 8)
        return context.get_dummy_value()

    return types.void(ary, idx, val), codegen


@intrinsic
def _fetch_add(typingctx: Any, ary: Any, idx: Any, val: Any) -> Any:
    """Atomically add ``val`` to ``ary[idx]`` (sequentially consistent); returns the old value."""
    _check_int_array(ary)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        value = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        return builder.atomic_rmw("add", ptr, value, "seq_cst")

    return ary.dtype(ary, idx, val), codegen


@intrinsic
def _compare_and_swap(typingctx: Any, ary: Any, idx: Any, expected: Any, new: Any) -> Any:
    """If ``ary[idx] == expected`` store ``new``; returns the value found (== expected on success)."""
    _check_int_array(ary)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        dtype = sig.args[0].dtype
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        cmp = context.cast(builder, args[2], sig.args[2], dtype)
        new_val = context.cast(builder, args[3], sig.args[3], dtype)
        pair = builder.cmpxchg(ptr, cmp, new_val, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return ary.dtype(ary, idx, expected, new), codegen


@intrinsic
def _fence_seq_cst(typingctx: Any) -> Any:
    """A full memory fence (``mfence`` on x86)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def _prefetch_codegen(rw: int) -> Callable[..., Any]:
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")  # type: ignore[no-untyped-call]
        builder.call(fn, [ptr, i32(rw), i32(3), i32(1)])
        return context.get_dummy_value()

    return codegen


@intrinsic
def _prefetch(typingctx: Any, ary: Any, idx: Any) -> Any:
    """Hint the CPU to bring the cache line holding ``ary[idx]`` into L1 (read, high locality)."""
    if not isinstance(ary, types.Array):
        raise TypeError(f"prefetch expects an array, got {ary}")
    return types.void(ary, idx), _prefetch_codegen(0)


@intrinsic
def _prefetch_write(typingctx: Any, ary: Any, idx: Any) -> Any:
    """Like ``prefetch``, for a line about to be written: fetched for ownership (``prefetchw``), so
    the stores that follow do not each wait for another core to give the line up."""
    if not isinstance(ary, types.Array):
        raise TypeError(f"prefetch_write expects an array, got {ary}")
    return types.void(ary, idx), _prefetch_codegen(1)


@intrinsic
def _cycles(typingctx: Any) -> Any:
    """The CPU cycle counter (``rdtsc`` on x86): cheap timestamps for latency measurement."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")  # type: ignore[no-untyped-call]
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def _sched_yield(typingctx: Any) -> Any:
    """Call libc ``sched_yield()``: give the core away when idle (paper §VI-E voluntary yield).

    The symbol is resolved from the process at load time, so the caller still caches.
    """

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.IntType(32), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "sched_yield")  # type: ignore[no-untyped-call]
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _usleep(typingctx: Any, us: Any) -> Any:
    """Call libc ``usleep(us)``: park an idle loop without returning to Python."""
    if not isinstance(us, types.Integer):
        raise TypeError(f"usleep expects an integer, got {us}")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "usleep")  # type: ignore[no-untyped-call]
        builder.call(fn, [builder.trunc(args[0], ir.IntType(32)) if args[0].type.width > 32 else args[0]])
        return context.get_dummy_value()

    return types.void(us), codegen


# Public, typed names (numba calls the intrinsic objects; mypy sees what user code passes).
IntArray = npt.NDArray[np.integer[Any]]
load_acquire = cast(Callable[[IntArray, int], int], _load_acquire)
store_release = cast(Callable[[IntArray, int, int], None], _store_release)
fetch_add = cast(Callable[[IntArray, int, int], int], _fetch_add)
compare_and_swap = cast(Callable[[IntArray, int, int, int], int], _compare_and_swap)
fence_seq_cst = cast(Callable[[], None], _fence_seq_cst)
prefetch = cast(Callable[[npt.NDArray[Any], int], None], _prefetch)
prefetch_write = cast(Callable[[npt.NDArray[Any], int], None], _prefetch_write)
cycles = cast(Callable[[], int], _cycles)
sched_yield = cast(Callable[[], None], _sched_yield)
usleep = cast(Callable[[int], None], _usleep)


# Control-plane (plain Python) callers cannot call intrinsics directly: these compiled wrappers can.
@njit(cache=True)
def _py_load_acquire(ary: IntArray, idx: int) -> int:
    value: int = load_acquire(ary, idx)
    return value


@njit(cache=True)
def _py_store_release(ary: IntArray, idx: int, val: int) -> None:
    store_release(ary, idx, val)


def py_load_acquire(ary: IntArray, idx: int) -> int:
    """``load_acquire`` for Python code (e.g. a control plane reading a version word)."""
    return int(_py_load_acquire(ary, idx))


def py_store_release(ary: IntArray, idx: int, val: int) -> None:
    """``store_release`` for Python code (e.g. publishing a rewritten port table)."""
    _py_store_release(ary, idx, val)
