"""The control region of a graph segment: the one place its word layout is defined.

A graph's processes and their supervisor talk through a block of int64 words in the segment:
line 0 belongs to the graph (a stop word every process honours, the layout generation), then one
line of :data:`LINE_WORDS` words per process slot (µNF processes first, then the I/O services).
Each word has one writer, so plain loads and stores suffice, except the stop word, which the hot
loop reads with acquire inside compiled code (it gets the word's index, :attr:`ControlLine.stop_word`).

A process line, by writer:

- supervisor → process: ``request`` (:data:`RUN`; :data:`STOP` for good; :data:`PAUSE`: finish
  the batch in hand, report ``paused`` and wait);
- process → supervisor: ``ready``, ``pid``, ``calls`` (compiled-loop slices done: a heartbeat and
  the proof a process runs with a rewritten port table), ``starts``, ``paused``;
- the zygote (the process's parent): ``exited`` and ``status`` (negative: killed by that signal);
- supervisor only: ``settled``, the counted-but-unfreed buffers earlier crash reclaims already
  accounted (see ``GraphRuntime.counted_unfreed``).

:class:`ControlBlock` is a typed view of the whole region, :class:`ControlLine` of one line.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

LINE_WORDS = 16
RUN, STOP, PAUSE = 0, 1, 2  # values of a line's request word
# graph line (line 0) words
_G_STOP, _G_LAYOUT_GEN = 0, 1
# process line words
_REQUEST, _READY, _PID, _CALLS, _STARTS, _PAUSED, _EXITED, _STATUS, _SETTLED = range(9)

I64 = npt.NDArray[np.int64]


class ControlLine:
    """The control line of process slot ``slot`` (a view: reads and writes go to shared memory)."""

    __slots__ = ("_w", "base", "slot")

    def __init__(self, words: I64, slot: int) -> None:
        self._w = words
        self.slot = slot
        self.base = (slot + 1) * LINE_WORDS

    def __repr__(self) -> str:
        return f"ControlLine({self.slot})"

    # -- requests (supervisor → process) ---------------------------------------------------------
    @property
    def stop_word(self) -> int:
        """Index of the request word in the block, for compiled code that polls it (0: run)."""
        return self.base + _REQUEST

    @property
    def request(self) -> int:
        return int(self._w[self.base + _REQUEST])

    def request_stop(self) -> None:
        self._w[self.base + _REQUEST] = STOP

    def request_pause(self) -> None:
        self._w[self.base + _REQUEST] = PAUSE

    def resume(self) -> None:
        """End a pause (a stop request stays)."""
        if self._w[self.base + _REQUEST] == PAUSE:
            self._w[self.base + _REQUEST] = RUN

    def should_stop(self) -> bool:
        """Stop requested for this process or for the whole graph."""
        return bool(self._w[self.base + _REQUEST] == STOP or self._w[_G_STOP] != 0)

    def pause_requested(self) -> bool:
        return bool(self._w[self.base + _REQUEST] == PAUSE)

    def prepare_start(self) -> None:
        """Before (re)starting the slot's process: not ready, nothing requested."""
        self._w[self.base + _READY] = 0
        self._w[self.base + _REQUEST] = RUN

    # -- state (process → supervisor) ------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self._w[self.base + _READY])

    @ready.setter
    def ready(self, value: bool) -> None:
        self._w[self.base + _READY] = int(value)

    @property
    def pid(self) -> int:
        return int(self._w[self.base + _PID])

    @pid.setter
    def pid(self, value: int) -> None:
        self._w[self.base + _PID] = value

    @property
    def calls(self) -> int:
        return int(self._w[self.base + _CALLS])

    def count_call(self) -> None:
        self._w[self.base + _CALLS] += 1

    @property
    def starts(self) -> int:
        return int(self._w[self.base + _STARTS])

    def count_start(self) -> None:
        self._w[self.base + _STARTS] += 1

    @property
    def paused(self) -> bool:
        return bool(self._w[self.base + _PAUSED])

    @paused.setter
    def paused(self, value: bool) -> None:
        self._w[self.base + _PAUSED] = int(value)

    # -- exit (the zygote) -----------------------------------------------------------------------
    @property
    def exited(self) -> bool:
        return bool(self._w[self.base + _EXITED])

    @property
    def status(self) -> int | None:
        """The exit status once the process ended (negative: killed by that signal), else None."""
        return int(self._w[self.base + _STATUS]) if self._w[self.base + _EXITED] else None

    def clear_exit(self) -> None:
        self._w[self.base + _EXITED] = 0

    def record_exit(self, status: int) -> None:
        """Store the exit status, then mark the process exited (a reader that sees one sees the other)."""
        self._w[self.base + _STATUS] = status
        self._w[self.base + _EXITED] = 1

    # -- supervisor's accounting -----------------------------------------------------------------
    @property
    def settled(self) -> int:
        return int(self._w[self.base + _SETTLED])

    def settle(self, n: int) -> None:
        self._w[self.base + _SETTLED] += n


class ControlBlock:
    """The control region of a graph: the graph line and ``lines`` process lines."""

    def __init__(self, words: I64) -> None:
        self.words = words
        self.lines = words.shape[0] // LINE_WORDS - 1

    @staticmethod
    def nbytes(lines: int) -> int:
        """Size of a control region with ``lines`` process lines."""
        return (lines + 1) * LINE_WORDS * 8

    def line(self, slot: int) -> ControlLine:
        if not 0 <= slot < self.lines:
            raise IndexError(f"control line {slot} out of range 0..{self.lines - 1}")
        return ControlLine(self.words, slot)

    @property
    def layout_generation(self) -> int:
        """Bumped each time the layout is rewritten while the graph runs (scale out/in)."""
        return int(self.words[_G_LAYOUT_GEN])

    def bump_layout_generation(self) -> None:
        self.words[_G_LAYOUT_GEN] += 1
