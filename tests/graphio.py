"""Drive a running graph from the test process: feed frames in, collect exits, check conservation."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from micronf.runtime.launch import GraphRuntime


def pump(g: GraphRuntime, frames: Sequence[bytes], *, burst: int = 32, timeout: float = 60.0,
         settle: float = 0.0, on_progress: Callable[[int], None] | None = None) -> dict[str, list[bytes]]:
    """Feed ``frames`` into the graph's input ring while draining every exit ring (the test process is
    the pool owner and the sink), until everything fed came out, was dropped inside, or ``timeout``.
    ``on_progress(fed)`` is called after every burst fed (e.g. to reconfigure the graph mid-stream).
    Returns the frames per exit."""
    mem = g.memory()
    entry = mem.rings[g.layout.entry_ring]
    out: dict[str, list[bytes]] = {e.name: [] for e in g.layout.exits}
    deadline = time.monotonic() + timeout
    pending = mem.pool.alloc(0)
    fed = 0
    while time.monotonic() < deadline:
        if not len(pending) and fed < len(frames):
            chunk = frames[fed : fed + burst]
            pending = mem.pool.alloc(len(chunk))
            for h, f in zip(pending, chunk, strict=False):
                mem.pool.write_frame(int(h), f)
            fed += len(pending)
            if on_progress is not None:
                on_progress(fed)
        if len(pending):
            pending = pending[entry.enqueue(pending) :]
        got = 0
        for e in g.layout.exits:
            hs = mem.rings[e.ring].dequeue(256)
            out[e.name] += [mem.pool.read_frame(int(h)) for h in hs]
            mem.pool.free(hs, client=g.io_client_base)
            got += len(hs)
        done = sum(len(v) for v in out.values()) + g.freed_inside()
        if fed == len(frames) and not len(pending) and done >= fed:
            break
        if not got:
            time.sleep(0.0002)
    time.sleep(settle)
    return out

