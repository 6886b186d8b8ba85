"""Borrowed arrays: views a numba kernel uses without NRT reference counting.

Why: numba wraps every call that takes an array (and many assignments of one) in an atomic
incref/decref of the array's meminfo, even when LLVM inlines the callee. A µNF kernel hands the
frame, the pool's arrays and its tables to a dozen small helpers per packet, so those locked
instructions cost more than the work itself (``bench/nfs.py``: ValidateUrl ~300 -> ~100 cycles
per packet once borrowed). A kernel borrows its arguments once per batch with
:func:`borrowed_pool` and :func:`borrowed`; what it derives from them (frames, rows) is borrowed
too. The arrays must stay alive meanwhile, which a kernel's arguments do for the whole call.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, cast

import numpy.typing as npt
from numba import njit, types
from numba.extending import intrinsic

from micronf.dataplane.pool import PoolArrays

__all__ = ["borrowed", "borrowed_pool"]


@intrinsic
def _borrowed(typingctx: Any, ary: Any) -> Any:
    """``borrowed(ary)``: the same view of ``ary``'s memory, with a NULL meminfo (NRT skips it) and
    no parent object. Only for arrays the caller keeps alive (a kernel's arguments, for the duration
    of the call); never store one or return it to Python. A view of a borrowed array is borrowed.
    """
    if not isinstance(ary, types.Array):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        src = context.make_array(ary)(context, builder, value=args[0])
        out = context.make_array(ary)(context, builder)
        for name in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(out, name, getattr(src, name))
        out.meminfo = context.get_constant_null(types.MemInfoPointer(ary.dtype))  # type: ignore[no-untyped-call]
        out.parent = context.get_constant_null(types.pyobject)
        return out._getvalue()

    return ary(ary), codegen


_A = TypeVar("_A", bound=npt.NDArray[Any])


class _Borrow(Protocol):
    """The type of :data:`borrowed` for mypy: an array of the same type back."""

    def __call__(self, ary: _A) -> _A: ...


borrowed = cast(_Borrow, _borrowed)


@njit(cache=True, nogil=True, inline="always")
def borrowed_pool(p: PoolArrays) -> PoolArrays:
    """``p`` with every array :func:`borrowed`: frames and metadata taken from it cost no refcounts."""
    return PoolArrays(borrowed(p.data), borrowed(p.words), borrowed(p.qwords), borrowed(p.ctrl), borrowed(p.free),
                      borrowed(p.ret_ctrl), borrowed(p.ret_slots))
