"""Run a µNF's kernel in this process over given frames: the in-memory way to test a µNF.

No processes, rings or shared memory: frames are copied into a private pool (same layout and
kernels as the shared one), the kernel runs in batches exactly as the runtime calls it, and the
result groups output frames by verdict. This is what every µNF test uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from micronf.dataplane.pool import DEFAULT_FRAME_CAPACITY, M_PORT, PacketPool
from micronf.runtime.nf import MicroNF
from micronf.runtime.verdict import Verdict


@dataclass
class KernelRun:
    """What came out: frames (as bytes, after the kernel's rewrites) per label and per drop reason."""

    outputs: dict[str, list[bytes]] = field(default_factory=dict)
    drops: dict[str, list[bytes]] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)  # per input frame: a label or "drop:<reason>"
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, verdict: str) -> int:
        """How many frames got ``verdict`` (a label or ``drop:<reason>``)."""
        return self.verdicts.count(Verdict(verdict))


def run_kernel(nf: MicroNF, frames: Sequence[bytes], *, batch: int = 32, in_port: int = 0) -> KernelRun:
    """Push ``frames`` through ``nf``'s kernel in batches of ``batch`` and collect what it decided."""
    cls = type(nf)
    longest = max(map(len, frames), default=0)  # the pool takes every frame given, as the offline runner does
    pool = PacketPool.local(max(batch, 1), max(DEFAULT_FRAME_CAPACITY, longest))
    state = nf.kernel_state()
    names = nf.counter_names()
    counters = np.zeros(max(len(names), 1), dtype=np.int64)
    handles = np.empty(batch, dtype=np.uint32)
    verdicts = np.empty(batch, dtype=np.int32)
    run = KernelRun(outputs={label: [] for label in cls.labels}, drops={r: [] for r in cls.drop_reasons})
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        n = len(chunk)
        got = pool.alloc(n)
        assert len(got) == n, "harness pool exhausted"
        handles[:n] = got
        for h, frame in zip(got, chunk, strict=True):
            pool.write_frame(int(h), frame)
            pool.arrays.words[h, M_PORT] = in_port
        verdicts[:n] = -(2**31)  # a kernel that forgets a packet is caught below
        cls.kernel(pool.arrays, handles, n, verdicts, state, counters)
        for i in range(n):
            verdict = Verdict.decode(int(verdicts[i]), cls.labels, cls.drop_reasons)
            if verdict is None:
                raise AssertionError(f"{cls.__name__} kernel wrote invalid verdict {verdicts[i]} for frame {start + i}")
            data = pool.read_frame(int(handles[i]))
            (run.drops[verdict.reason] if verdict.is_drop else run.outputs[verdict.label]).append(data)
            run.verdicts.append(verdict)
        pool.free(handles[:n])
    run.counters = {name: int(counters[i]) for i, name in enumerate(names)}
    return run
