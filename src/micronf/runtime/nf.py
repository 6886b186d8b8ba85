"""The µNF model: a class per µNF carrying its descriptor, config, labels, drop reasons, counters
and compiled batch kernel. Registration is automatic.

A kernel is a module-level numba function::

    @njit(cache=True, nogil=True)
    def kernel(p: PoolArrays, handles, n, verdicts, state, counters) -> None

that writes one verdict per packet ``i < n``: an egress label index ``0 .. len(labels)-1``, or a
drop ``drop_code(j)`` for reason ``drop_reasons[j]``. ``state`` is the tuple of arrays returned by
:meth:`MicroNF.state` (built once from the config: rule tables, automata); ``counters`` is an int64
array in shared memory, one slot per name in :meth:`MicroNF.counter_names`, that the kernel bumps
(once per batch where it can) and anyone can read. The runtime owns everything else: rings,
routing by verdict, drop accounting, freeing buffers.

Docstrings follow one fixed format, read by ``micronf nfs``: a summary line, then sections
``Config:``, ``Ports:``, ``Counters:``, ``Notes:``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError

from micronf.runtime.descriptor import Descriptor
from micronf.validation import describe_validation_errors

KernelState = tuple[npt.NDArray[Any], ...]
Kernel = Callable[..., None]

DOC_SECTIONS = ("Config", "Ports", "Counters", "Notes")
_SECTION_RE = re.compile(r"^\s*(" + "|".join(DOC_SECTIONS) + r"):\s*$")


def drop_code(reason_index: int) -> int:
    """The verdict value meaning "drop for reason ``reason_index``" (always negative)."""
    return -1 - reason_index


class NFConfig(BaseModel):
    """Base of every µNF config: frozen, and unknown keys are an error (like Click's keyword parsing)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class NFConfigError(ValueError):
    """A µNF config was rejected; the message names the µNF, the field and the problem."""


class MicroNF:
    """Base class of all µNFs. Subclasses set the class attributes below and a module-level ``kernel``."""

    descriptor: ClassVar[Descriptor]
    Config: ClassVar[type[NFConfig]] = NFConfig
    labels: ClassVar[tuple[str, ...]] = ("out",)
    drop_reasons: ClassVar[tuple[str, ...]] = ()
    kernel: ClassVar[Kernel]
    registry: ClassVar[dict[str, type[MicroNF]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__name__
        for attr in ("descriptor", "kernel"):
            if attr not in cls.__dict__:
                raise TypeError(f"µNF {name} must define {attr!r} on the class")
        if not cls.labels:
            raise TypeError(f"µNF {name} needs at least one egress label")
        if len(set(cls.labels)) != len(cls.labels) or len(set(cls.drop_reasons)) != len(cls.drop_reasons):
            raise TypeError(f"µNF {name}: labels and drop reasons must be unique")
        if cls.drop_reasons and not cls.descriptor.may_drop:
            raise TypeError(f"µNF {name} declares drop reasons but its descriptor says it never drops")
        if name in MicroNF.registry and MicroNF.registry[name] is not cls:
            raise TypeError(f"two µNFs are named {name}: {MicroNF.registry[name].__module__} and {cls.__module__}")
        MicroNF.registry[name] = cls

    def __init__(self, config: NFConfig | Mapping[str, Any] | None = None) -> None:
        if isinstance(config, NFConfig):
            if not isinstance(config, self.Config):
                raise NFConfigError(
                    f"{type(self).__name__}: expected {self.Config.__name__}, got {type(config).__name__}"
                )
            self.config = config
        else:
            try:
                self.config = self.Config.model_validate(dict(config or {}))
            except ValidationError as exc:
                why = describe_validation_errors(exc.errors())
                raise NFConfigError(f"{type(self).__name__} config: {why}") from None

    # -- what subclasses may override --------------------------------------------------------
    def state(self) -> KernelState:
        """Arrays the kernel needs, built once from the config (default: one dummy array)."""
        return (np.zeros(1, dtype=np.int64),)

    def counter_names(self) -> tuple[str, ...]:
        """Names of the µNF's own counters (the kernel's ``counters`` array), in order."""
        return ()

    # -- derived -------------------------------------------------------------------------------
    @classmethod
    def verdict_names(cls) -> tuple[str, ...]:
        """Every verdict in route-table column order: the labels, then ``drop:<reason>``."""
        return cls.labels + tuple(f"drop:{r}" for r in cls.drop_reasons)

    @classmethod
    def verdict_column(cls, verdict: int) -> int:
        """Route-table column of a verdict value (labels first, then drop reasons)."""
        return verdict if verdict >= 0 else len(cls.labels) + (-1 - verdict)

    @classmethod
    def summary(cls) -> str:
        return (inspect.getdoc(cls) or "").splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """The docstring split into the fixed sections (``Summary`` plus ``DOC_SECTIONS``)."""
        sections: dict[str, list[str]] = {"Summary": []}
        current = "Summary"
        for line in (inspect.getdoc(cls) or "").splitlines():
            m = _SECTION_RE.match(line)
            if m:
                current = m.group(1)
                sections[current] = []
            else:
                sections[current].append(line)
        return {k: "\n".join(v).strip() for k, v in sections.items()}


def nf_class(name: str) -> type[MicroNF]:
    """The registered µNF class called ``name`` (loads the library first)."""
    load_library()
    try:
        return MicroNF.registry[name]
    except KeyError:
        known = ", ".join(sorted(MicroNF.registry))
        raise KeyError(f"unknown µNF type {name!r} (known: {known})") from None


PLUGINS_ENV = "MICRONF_NF_MODULES"


_loaded_with: list[str] = []  # the $MICRONF_NF_MODULES values load_library has loaded the µNFs for


def load_library() -> None:
    """Import every module of ``micronf.nfs``, and the modules named (comma-separated) in
    ``$MICRONF_NF_MODULES``, so all µNFs are registered. µNF processes inherit the variable, so
    third-party µNFs work everywhere the library's do. Done once per value of the variable
    (:func:`nf_class` calls this for every node of a graph)."""
    import importlib
    import os
    import pkgutil

    import micronf.nfs as pkg

    plugins = os.environ.get(PLUGINS_ENV, "")
    if plugins in _loaded_with:
        return
    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"cannot import µNF module {name!r} named in ${PLUGINS_ENV}: {exc}") from exc
    _loaded_with.append(plugins)
