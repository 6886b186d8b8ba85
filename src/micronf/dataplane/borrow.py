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

from numba import njit, types
from numba.extending import intrinsic

from micronf.dataplane.pool import PoolArrays

__all__ = ["borrowed", "borrowed_pool"]


def _borrow_value(context: Any, builder: Any, ty: Any, value: Any) -> Any:
    """The LLVM value of ``value`` (of numba type ``ty``) with every array in it borrowed."""
    if isinstance(ty, types.Array):
        src = context.make_array(ty)(context, builder, value=value)
        out = context.make_array(ty)(context, builder)
        for name in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(out, name, getattr(src, name))
        out.meminfo = context.get_constant_null(types.MemInfoPointer(ty.dtype))  # type: ignore[no-untyped-call]
        out.parent = context.get_constant_null(types.pyobject)
        return out._getvalue()
    if isinstance(ty, types.BaseTuple):
        for i, member in enumerate(_members(ty)):
            item = builder.extract_value(value, i)
            value = builder.insert_value(value, _borrow_value(context, builder, member, item), i)
        return value
    context.nrt.incref(builder, ty, value)  # passed through: the result is a new reference (no-op for scalars)
    return value


def _has_array(ty: Any) -> bool:
    """Does a value of numba type ``ty`` hold an array (itself, or in a tuple, nested)?"""
    if isinstance(ty, types.Array):
        return True
    return isinstance(ty, types.BaseTuple) and any(_has_array(member) for member in _members(ty))


def _members(tup: Any) -> list[Any]:
    """The member types of the numba tuple type ``tup`` (typed ``Any``: numba's stubs do not make it iterable)."""
    return list(tup)


@intrinsic
def _borrowed(typingctx: Any, ary: Any) -> Any:
    """``borrowed(x)``: ``x`` with every array in it (``x`` itself, or the members of a tuple or
    named tuple such as a pool's or a stage's arrays, nested tuples included) replaced by the same
    view of the same memory with a NULL meminfo (NRT skips it) and no parent object; other members
    are passed through. Only for arrays the caller keeps alive (a kernel's arguments, for the
    duration of the call); never store one or return it to Python. A view of a borrowed array is
    borrowed.
    """
    if not _has_array(ary):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return _borrow_value(context, builder, ary, args[0])

    return ary(ary), codegen


_A = TypeVar("_A")


class _Borrow(Protocol):
    """The type of :data:`borrowed` for mypy: a value of the same type back."""

    def __call__(self, ary: _A) -> _A: ...


borrowed = cast(_Borrow, _borrowed)


@njit(cache=True, nogil=True, inline="always")
def borrowed_pool(p: PoolArrays) -> PoolArrays:
    """``p`` with every array :func:`borrowed`: frames and metadata taken from it cost no refcounts."""
    return borrowed(p)
