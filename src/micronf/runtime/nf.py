"""The µNF model: a class per µNF carrying its descriptor, config, labels, drop reasons, counters
and compiled batch kernel. Registration is automatic; the class is checked when it is defined.

A kernel is a module-level numba function::

    @njit(cache=True, nogil=True)
    def kernel(p: PoolArrays, handles, n, verdicts, state, counters) -> None

that writes one verdict per packet ``i < n``: a member of the µNF's ``Label`` enum (an egress),
or of its ``Drop`` enum (a drop for that reason; see :mod:`micronf.runtime.verdict`). ``state``
is what :meth:`MicroNF.state` returned, a NamedTuple of arrays built once from the config (rule
tables, automata); ``counters`` is an int64 array in shared memory, one slot per name in
:meth:`MicroNF.counter_names` (by default the µNF's ``Counter`` enum), that the kernel bumps
(once per batch where it can) and anyone can read. The runtime owns everything else: rings,
routing by verdict, drop accounting, freeing buffers.

Docstrings follow one fixed format, read by ``micronf nfs``: a summary line, then sections
``Config:``, ``Ports:``, ``Counters:``, ``Notes:``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt
from numba.core.dispatcher import Dispatcher
from pydantic import BaseModel, ConfigDict, ValidationError

from micronf.runtime.descriptor import Descriptor
from micronf.runtime.verdict import (
    Counters,
    DropReasons,
    Labels,
    NoCounters,
    NoDrops,
    Out,
    Verdict,
    enum_error,
    verdict_columns,
)
from micronf.validation import describe_validation_errors

KernelState = tuple[npt.NDArray[Any], ...]
"""What :meth:`MicroNF.state` returns: a NamedTuple of arrays (one class per µNF, fields by name)."""
Kernel = Callable[..., None]
KERNEL_PARAMS = ("p", "handles", "n", "verdicts", "state", "counters")

DOC_SECTIONS = ("Config", "Ports", "Counters", "Notes")
_SECTION_RE = re.compile(r"^\s*(" + "|".join(DOC_SECTIONS) + r"):\s*$")


class NoState(NamedTuple):
    """The state of a µNF that needs none (numba wants some argument)."""

    unused: npt.NDArray[np.int64]


class NFConfig(BaseModel):
    """Base of every µNF config: frozen, and unknown keys are an error (like Click's keyword parsing)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class NFConfigError(ValueError):
    """A µNF config was rejected; the message names the µNF, the field and the problem."""


class MicroNF:
    """Base class of all µNFs. Subclasses set ``descriptor`` and ``kernel``, and where the defaults do
    not fit ``Config``, ``Label``, ``Drop`` and ``Counter``; ``labels`` and ``drop_reasons`` (names in
    verdict order) are derived from ``Label`` and ``Drop``."""

    descriptor: ClassVar[Descriptor]
    Config: ClassVar[type[NFConfig]] = NFConfig
    Label: ClassVar[type[Labels]] = Out
    Drop: ClassVar[type[DropReasons]] = NoDrops
    Counter: ClassVar[type[Counters]] = NoCounters
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
        for attr, enum in (("labels", "Label"), ("drop_reasons", "Drop")):
            if attr in cls.__dict__:
                raise TypeError(f"µNF {name}: {attr} are derived; declare them as an enum {enum} = ... instead")
        for attr, base in (("Label", Labels), ("Drop", DropReasons), ("Counter", Counters)):
            problem = enum_error(getattr(cls, attr), base)
            if problem:
                raise TypeError(f"µNF {name}: {attr} {problem}")
        cls.labels = tuple(m.name for m in cls.Label)
        cls.drop_reasons = tuple(m.name for m in cls.Drop)
        if not cls.labels:
            raise TypeError(f"µNF {name} needs at least one egress label")
        if cls.drop_reasons and not cls.descriptor.may_drop:
            raise TypeError(f"µNF {name} declares drop reasons but its descriptor says it never drops")
        _check_kernel(name, cls.__dict__["kernel"])
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
        """The kernel's arrays, built once from the config: a NamedTuple of numpy arrays."""
        return NoState(np.zeros(1, dtype=np.int64))

    def counter_names(self) -> tuple[str, ...]:
        """Names of the µNF's own counters (the kernel's ``counters`` array), in order: the
        ``Counter`` enum's; override when they depend on the config (one per rule, per bin...)."""
        return tuple(m.name for m in self.Counter)

    # -- derived -------------------------------------------------------------------------------
    def kernel_state(self) -> KernelState:
        """:meth:`state`, checked: a NamedTuple of numpy arrays (what the runtime hands the kernel)."""
        state = self.state()
        fields = getattr(state, "_fields", None)
        if not isinstance(state, tuple) or fields is None:
            raise TypeError(f"{type(self).__name__}.state() must return a NamedTuple of arrays, "
                            f"got {type(state).__name__}")
        for field, value in zip(fields, state, strict=True):
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{type(self).__name__}.state().{field} must be a numpy array, "
                                f"got {type(value).__name__}")
        return state

    @classmethod
    def verdict_names(cls) -> tuple[Verdict, ...]:
        """Every verdict in route-table column order: the labels, then the drops."""
        return verdict_columns(cls.labels, cls.drop_reasons)

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


def _check_kernel(nf: str, kernel: Any) -> None:
    """A µNF's kernel must be a numba-compiled function ``kernel(p, handles, n, verdicts, state,
    counters)``: checked when the class is defined, so a wrong one fails at import, not at deploy."""
    if not isinstance(kernel, Dispatcher):
        raise TypeError(f"µNF {nf}: kernel {kernel!r} must be a numba function (@njit(cache=True, nogil=True))")
    params = tuple(inspect.signature(kernel.py_func).parameters)
    if params != KERNEL_PARAMS:
        raise TypeError(f"µNF {nf}: kernel {kernel.py_func.__name__}({', '.join(params)}) must take "
                        f"({', '.join(KERNEL_PARAMS)})")


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

    pkg = importlib.import_module("micronf.nfs")  # by name: the runtime sits below the µNF library
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
