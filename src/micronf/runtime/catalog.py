"""The µNF catalog, generated from the registered classes (what ``micronf nfs`` prints)."""

from __future__ import annotations

import ipaddress
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from micronf.runtime.descriptor import REGIONS
from micronf.runtime.nf import MicroNF, load_library

SERVICE_DROPS: dict[str, str] = {
    "unmatched": "Rx: no classification rule of the deployment accepted the frame (with rules, only the "
                 "flows they accept enter the graph)",
    "rule_drop": "Rx: a classification rule of the deployment drops the frame's flow",
    "pool_empty": "Rx: every packet buffer of the graph was in use, so the frame could not be taken in",
    "entry_full": "Rx: the first µNF's input ring was full, so the frame was dropped at input (traffic offered "
                  "faster than the graph processes it, as a NIC ring overflows)",
    "oversize": "Rx: the frame is longer than the graph's packet buffers (it is dropped, never cut)",
    "full": "the ring to the next µNF was full (that µNF was slower than its input), so the packet was "
            "dropped between the two",
    "unconnected": "the µNF gave the packet a label that leads nowhere in the graph",
    "bad_verdict": "the µNF's kernel returned a verdict that is neither a label nor a drop reason (a bug)",
    "refused": "Tx: the output backend did not take the packet (e.g. the interface's queue was full)",
    "no_output": "Tx: the exit has no output configured, so its packets are freed and counted",
    "lost_in_crash": "held by a µNF process when it crashed: reclaimed by the supervisor and counted as dropped",
    "(freed inside the graph)": "offline: freed by a µNF instead of written to an exit (a label that leads "
                                "nowhere, a bad verdict); the offline runner reports them in one sum",
}
"""Drop reasons of the runtime, the ports and the Rx/Tx services (not of one µNF type), in words.

A drop is named ``where.reason``: ``@rx.entry_full`` (the Rx service), ``appfw.validate.full`` (the
ring out of µNF ``appfw.validate``), ``appfw.validate.sqli`` (a reason of the µNF's own type,
explained in its docstring: :func:`nf_drop_reasons`). :func:`explain_drop` reads any of them.
"""

_PORT_LINE = re.compile(r"^(drop:)?[\w.-]+: ")  # starts a port item ("out: ...", "drop:sqli: ...")
_DROP_LINE = re.compile(r"^drop:([\w.-]+):\s*(.*)$")


def nf_drop_reasons(cls: type[MicroNF]) -> dict[str, str]:
    """Each drop reason of a µNF type and what it means (its docstring's ``drop:reason:`` port lines)."""
    items: list[str] = []
    for raw in cls.doc_sections().get("Ports", "").splitlines():
        line = raw.strip()
        if _PORT_LINE.match(line) or not items:
            items.append(line)
        elif line:
            items[-1] += " " + line
    found = {m.group(1): m.group(2) for m in map(_DROP_LINE.match, items) if m}
    return {r: found.get(r, "") for r in cls.drop_reasons}


def explain_drop(key: str, node_types: dict[str, str]) -> str:
    """What the drop ``where.reason`` means; ``node_types`` maps the graph's µNF names to their types.

    A reason of the µNF type at ``where`` is explained by that type; any other (the runtime's and
    the services') by :data:`SERVICE_DROPS`; an unknown one by "".
    """
    load_library()
    where, _, reason = key.rpartition(".")
    cls = MicroNF.registry.get(node_types.get(where, ""))
    if cls is not None and reason in cls.drop_reasons:
        return nf_drop_reasons(cls)[reason]
    return SERVICE_DROPS.get(reason, SERVICE_DROPS.get(key, ""))


class ConfigField(BaseModel):
    name: str
    type: str
    default: Any
    required: bool
    description: str


class CatalogEntry(BaseModel):
    name: str
    module: str
    summary: str
    descriptor: dict[str, Any]
    config: list[ConfigField]
    labels: list[str]
    drop_reasons: list[str]
    drop_explanations: dict[str, str]  # reason -> what it means (the docstring's ``drop:reason:`` lines)
    counters: str  # the docstring's Counters section (names may depend on the config)
    notes: str


_NAMES = {int: "int", float: "float", str: "str", bool: "bool", bytes: "bytes", type(None): "null",
          ipaddress.IPv4Address: "IPv4 address", ipaddress.IPv4Network: "IPv4 network",
          ipaddress.IPv6Address: "IPv6 address", ipaddress.IPv6Network: "IPv6 network"}


def _constraints(metadata: list[Any]) -> list[Any]:
    """The annotated-types constraints in ``metadata``, FieldInfos opened (validators left out)."""
    found: list[Any] = []
    for m in metadata:
        if isinstance(m, FieldInfo):
            found += _constraints(m.metadata)
        elif isinstance(m, annotated_types.BaseMetadata):
            found.append(m)
    return found


def _bounds(ge: Any, le: Any, gt: Any = None, lt: Any = None) -> str:
    """``0..65535`` for inclusive bounds on both sides, else ``≥ 1``, ``> 0, < 1`` and the like."""
    if ge is not None and le is not None:
        return f"{ge}..{le}"
    parts = [f"{op} {v}" for op, v in (("≥", ge), (">", gt), ("≤", le), ("<", lt)) if v is not None]
    return ", ".join(parts)


def type_text(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A config field's type as a user reads it, from its annotation and constraints.

    ``list[Annotated[int, Field(ge=0, le=65535)]]`` reads ``list of int 0..65535``; a ``Literal``
    lists its choices, ``X | None`` reads ``X or null``, a length constraint ``at least 1``.
    """
    cons = _constraints(metadata or [])
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_text(args[0], list(args[1:]) + (metadata or []))
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    def bound(kind: type[Any], attr: str) -> Any:
        return next((getattr(c, attr) for c in cons if isinstance(c, kind)), None)

    value = _bounds(bound(annotated_types.Ge, "ge"), bound(annotated_types.Le, "le"),
                    bound(annotated_types.Gt, "gt"), bound(annotated_types.Lt, "lt"))
    n_min, n_max = bound(annotated_types.MinLen, "min_length"), bound(annotated_types.MaxLen, "max_length")
    if origin in (list, tuple, set, frozenset):
        item = type_text(args[0]) if args else "any"
        sizes = ("" if n_max is None else f", at most {n_max}") if n_min is None else (
            f", at least {n_min}" if n_max is None else f", {n_min}..{n_max} items")
        return f"{'list' if origin is list else origin.__name__} of {item}{sizes}"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    name = _NAMES.get(annotation) or getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    length = _bounds(n_min, n_max)
    unit = " characters" if annotation is str else " items"
    return " ".join(t for t in (name, value, f"({length}{unit})" if length else "") if t)


_ITEM = re.compile(r"^([A-Za-z_][\w.<>{}-]*|- ):? ")


def unwrap(text: str) -> str:
    """Join a docstring section's wrapped lines; keep a line break before ``name: ...`` items."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if lines and not _ITEM.match(line):
            lines[-1] += " " + line
        else:
            lines.append(line)
    return "\n".join(lines)


def entry(cls: type[MicroNF]) -> CatalogEntry:
    sections = cls.doc_sections()
    fields = []
    for name, info in cls.Config.model_fields.items():
        required = info.default is PydanticUndefined and info.default_factory is None
        default: Any = None
        if not required:
            default = info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
        fields.append(ConfigField(name=name, type=type_text(info.annotation, info.metadata), default=default,
                                  required=required, description=info.description or ""))
    d = cls.descriptor
    return CatalogEntry(
        name=cls.__name__, module=cls.__module__, summary=cls.summary(),
        descriptor={"stateful": d.stateful, **{r: d.access(r).value for r in REGIONS}, "may_drop": d.may_drop},
        config=fields, labels=list(cls.labels), drop_reasons=list(cls.drop_reasons),
        drop_explanations=nf_drop_reasons(cls),
        counters=unwrap(sections.get("Counters", "")), notes=unwrap(sections.get("Notes", "")),
    )


def catalog() -> list[CatalogEntry]:
    """Every registered µNF (library and ``$MICRONF_NF_MODULES``), by name."""
    load_library()
    return [entry(cls) for _, cls in sorted(MicroNF.registry.items())]
