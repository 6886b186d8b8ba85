"""Algorithms on directed graphs given as successor maps, shared by the runtime's graph planning
and the orchestrator's checks of VNF templates and SFCs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def find_cycle(succ: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle of the directed graph ``succ`` as a node list ending where it starts, or None.

    Depth-first with an explicit stack (no recursion limit: a chain of 100,000 nodes is fine), in
    the order of ``succ`` and of each node's successors, so the cycle reported is deterministic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in succ:
        if start in state:
            continue
        path = [start]
        where = {start: 0}  # node -> its index in path
        stack = [iter(succ.get(start, ()))]
        state[start] = 1
        while stack:
            m = next(stack[-1], None)
            if m is None:
                stack.pop()
                state[path[-1]] = 2
                del where[path.pop()]
            elif state.get(m) == 1:
                return [*path[where[m]:], m]  # m is on the current path
            elif m not in state:
                state[m] = 1
                where[m] = len(path)
                path.append(m)
                stack.append(iter(succ.get(m, ())))
    return None
