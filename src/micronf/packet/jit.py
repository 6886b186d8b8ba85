"""The typed ``njit`` decorators of the packet kernels (and of the pcap kernels in :mod:`micronf.io`).

Why: numba is untyped for mypy; decorating with it directly would make every kernel ``Any`` for its
callers (and fail ``disallow_untyped_decorators``). These wrappers return the function's own type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit

__all__ = ["inline_kernel", "kernel"]

_F = TypeVar("_F", bound=Callable[..., Any])


def kernel(fn: _F) -> _F:
    """Exactly ``njit(cache=True, nogil=True)(fn)``, typed so mypy keeps ``fn``'s signature."""
    return cast(_F, njit(cache=True, nogil=True)(fn))


def inline_kernel(fn: _F) -> _F:
    """``njit(cache=True, nogil=True, forceinline=True)(fn)``, typed so mypy keeps ``fn``'s signature.

    ``forceinline`` marks the function ``alwaysinline`` for LLVM: without it LLVM keeps the larger
    helpers (``five_tuple_values``, ``tcp_payload_offset``, ...) as real calls, and numba then wraps
    every such call in an atomic NRT incref/decref of the frame array, which costs more than the
    parsing itself (see :mod:`micronf.packet.headers`).
    """
    return cast(_F, njit(cache=True, nogil=True, forceinline=True)(fn))
