"""What every port shares: the port kinds and the port table layout.

A µNF never knows who is on the other side of a port (paper §IV-C3). The runtime keeps each
µNF's ports in a small int64 *port table* in the graph's shared segment; the compiled hot loop
dispatches on the kind stored there (``micronf.ports.dispatch``). Because the table lives in
shared memory and carries a version number, the agent can rewrite it while traffic flows (e.g.
turn a point-to-point egress into a load-balanced one when it scales a µNF out): the µNF picks
the new table up between two compiled calls, without losing a packet.

Port table (int64 words)::

    [V_VERSION] bumped by whoever rewrites the table
    [V_N_IN], [V_N_EG], [V_N_VERDICTS]
    ingress i  at IN_BASE + i * IN_COLS:  kind, ring, need (Sync: number of parallel branches)
    egress  e  at EG_BASE + e * EG_COLS:  kind, on_full, n_rings, ring_0 .. ring_{MAX_FANOUT-1}
    route      at ROUTE_BASE + i * MAX_VERDICTS + column: egress index, ROUTE_FREE or ROUTE_UNCONNECTED

Route columns are the µNF's verdicts: its labels, then its drop reasons (``MicroNF.verdict_names``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

# ingress kinds
IN_PP = 0
IN_SYNC = 1
# egress kinds
EG_PP = 0
EG_BRANCH = 1
EG_MARKER = 2
EG_MARK_ONLY = 3
EG_LB_RR = 4
EG_LB_FLOW = 5
EG_LOCAL = 6  # to the next µNF fused in the same process (ring field = stage index)
# what a full egress does with the handles that did not fit
FULL_DROP = 0  # free them and count a drop (reason: egress full) — live traffic
FULL_WAIT = 1  # back-pressure: retry, yielding, until they fit or the µNF is stopped — offline runs
# route values besides egress indices
ROUTE_FREE = -1  # a drop verdict: return the buffer to the pool
ROUTE_UNCONNECTED = -2  # a label with no link: counted, buffer returned

MAX_IN = 8
MAX_EG = 16
MAX_FANOUT = 8
MAX_VERDICTS = 64
V_VERSION, V_N_IN, V_N_EG, V_N_VERDICTS = 0, 1, 2, 3
IN_COLS = 3
EG_COLS = 3 + MAX_FANOUT
EG_KIND, EG_ON_FULL, EG_NRINGS, EG_RING0 = 0, 1, 2, 3
IN_BASE = 8
EG_BASE = IN_BASE + MAX_IN * IN_COLS
ROUTE_BASE = EG_BASE + MAX_EG * EG_COLS
TABLE_WORDS = ROUTE_BASE + MAX_IN * MAX_VERDICTS

Handles = npt.NDArray[np.uint32]



@njit(cache=True, nogil=True)
def keep_unsent(handles: Handles, sent: int, n: int) -> int:
    """Move ``handles[sent:n]`` (the ones a ring did not take) to the front; returns their count."""
    for i in range(n - sent):
        handles[i] = handles[sent + i]
    return n - sent
