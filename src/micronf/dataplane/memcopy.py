"""``copy_bytes``: a frame-sized copy between byte arrays as one ``memcpy``, callable from numba code.

Why: numba compiles a slice assignment (``dst[a:b] = src[c:d]``) into a generic element loop
with a shape check and, for views, reference counting; a 200-byte frame then costs ~300 cycles
to copy, the largest part of the Rx service's per-frame work (measured: ``rx_burst`` 417-605 ->
212 TSC ticks per frame with this intrinsic). ``llvm.memcpy`` lets LLVM emit the CPU's best copy
(inline vector moves for small sizes, the libc routine for large ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _copy_bytes(typingctx: Any, dst: Any, d0: Any, src: Any, s0: Any, n: Any) -> Any:
    """``dst[d0:d0+n] = src[s0:s0+n]`` for 1-D uint8 arrays; no bounds check, no overlap allowed."""
    for ary in (dst, src):
        if not isinstance(ary, types.Array) or ary.ndim != 1 or ary.dtype != types.uint8:
            raise TypeError(f"copy_bytes expects 1-D uint8 arrays, got {ary}")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        pointers = []
        for k in (0, 2):
            array = context.make_array(sig.args[k])(context, builder, args[k])
            pointers.append(cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
                context, builder, sig.args[k], array, [args[k + 1]], wraparound=False))
        count = context.cast(builder, args[4], sig.args[4], types.intp)
        cgutils.raw_memcpy(builder, pointers[0], pointers[1], count, 1)  # type: ignore[no-untyped-call]
        return context.get_dummy_value()

    return types.void(dst, d0, src, s0, n), codegen


Index = int | np.integer[Any]
copy_bytes = cast(Callable[[npt.NDArray[np.uint8], Index, npt.NDArray[np.uint8], Index, Index], None], _copy_bytes)
"""``copy_bytes(dst, d0, src, s0, n)``: copy ``n`` bytes from ``src[s0:]`` to ``dst[d0:]``. The caller
checks that both ranges lie inside their arrays and do not overlap (this is a plain ``memcpy``)."""
