"""Verdicts: what a µNF decided for a packet, declared once by name and decoded in one place.

A kernel writes one int32 verdict per packet: an egress label index ``0 .. len(labels)-1``, or
``-1 - j`` to drop it for reason ``j``. A µNF declares its labels, drop reasons and counters as
enums (subclasses of :class:`Labels`, :class:`DropReasons`, :class:`Counters`, members made with
``auto()``), so the number a kernel writes is derived from the name and can never disagree with
it. numba reads an ``IntEnum`` member as a compile-time constant: a kernel writing
``verdicts[i] = Drop.runt`` compiles to the same store as ``verdicts[i] = -1``.

Outside kernels a verdict is named: the label (``out``) or ``drop:<reason>`` (``drop:sqli``),
as stats, route tables, graph files and the test harness show it. :class:`Verdict` is such a
name, with :attr:`~Verdict.is_drop`, :attr:`~Verdict.reason` and :attr:`~Verdict.label`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum, auto
from typing import Any

_DROP = "drop:"


class _Indexed(IntEnum):
    """An enum whose ``auto()`` members number 0, 1, 2... in declaration order."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> int:
        return count


class Labels(_Indexed):
    """Base of a µNF's egress labels: member ``k`` (by ``auto()``) is verdict ``k``, route column ``k``."""


class Counters(_Indexed):
    """Base of a µNF's counters: member ``k`` (by ``auto()``) is slot ``k`` of the kernel's ``counters``."""


class DropReasons(IntEnum):
    """Base of a µNF's drop reasons: member ``j`` (by ``auto()``) is the drop verdict ``-1 - j``."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> int:
        return drop_code(count)


class Out(Labels):
    """The labels of a µNF with one egress (the default)."""

    out = auto()


class NoDrops(DropReasons):
    """The drop reasons of a µNF that never drops (the default)."""


class NoCounters(Counters):
    """The counters of a µNF without fixed counters (the default)."""


def drop_code(reason_index: int) -> int:
    """The verdict value meaning "drop for reason ``reason_index``" (always negative)."""
    return -1 - reason_index


def enum_error(enum: type[IntEnum], base: type[IntEnum]) -> str | None:
    """Why ``enum`` cannot serve as a µNF's ``base`` declaration (``None`` when it can): it must
    subclass ``base`` and number its members as ``auto()`` does."""
    if not (isinstance(enum, type) and issubclass(enum, base)):
        return f"must be a subclass of {base.__name__}, got {enum!r}"
    code = drop_code if base is DropReasons else int
    want = [code(k) for k in range(len(enum))]
    if [m.value for m in enum] != want:
        return f"{enum.__name__} must number its members {want} in order (declare them with auto())"
    return None


class Verdict(str):
    """A verdict by name: an egress label (``"out"``) or a drop (``"drop:sqli"``). It is a ``str``,
    so it is stored, compared and serialised as its name."""

    __slots__ = ()

    @classmethod
    def drop(cls, reason: str) -> Verdict:
        """The verdict dropping a packet for ``reason``."""
        return cls(_DROP + reason)

    @classmethod
    def decode(cls, value: int, labels: Sequence[str], drop_reasons: Sequence[str]) -> Verdict | None:
        """The verdict a kernel wrote as ``value``, or ``None`` if it is no label or drop reason."""
        if 0 <= value < len(labels):
            return cls(labels[value])
        if -len(drop_reasons) <= value < 0:
            return cls.drop(drop_reasons[-1 - value])
        return None

    @property
    def is_drop(self) -> bool:
        return self.startswith(_DROP)

    @property
    def reason(self) -> str:
        """The drop reason (a ``ValueError`` for a label)."""
        if not self.is_drop:
            raise ValueError(f"verdict {str(self)!r} is a label, not a drop")
        return self[len(_DROP):]

    @property
    def label(self) -> str:
        """The egress label (a ``ValueError`` for a drop)."""
        if self.is_drop:
            raise ValueError(f"verdict {str(self)!r} is a drop, not a label")
        return str(self)


def verdict_columns(labels: Sequence[str], drop_reasons: Sequence[str]) -> tuple[Verdict, ...]:
    """Every verdict in route-table (and verdict-counter) column order: the labels, then the drops."""
    return (*map(Verdict, labels), *map(Verdict.drop, drop_reasons))


def drop_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """From packets per verdict name (a µNF's ``verdicts`` stats): packets per drop reason."""
    return {Verdict(v).reason: c for v, c in counts.items() if Verdict(v).is_drop}
