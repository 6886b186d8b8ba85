"""The µNF catalog, generated from the registered classes (what ``micronf nfs`` prints)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from micronf.runtime.descriptor import REGIONS
from micronf.runtime.nf import MicroNF, load_library


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
    counters: str  # the docstring's Counters section (names may depend on the config)
    notes: str


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")


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
        fields.append(ConfigField(name=name, type=_type_name(info.annotation), default=default, required=required,
                                  description=info.description or ""))
    d = cls.descriptor
    return CatalogEntry(
        name=cls.__name__, module=cls.__module__, summary=cls.summary(),
        descriptor={"stateful": d.stateful, **{r: d.access(r).value for r in REGIONS}, "may_drop": d.may_drop},
        config=fields, labels=list(cls.labels), drop_reasons=list(cls.drop_reasons),
        counters=unwrap(sections.get("Counters", "")), notes=unwrap(sections.get("Notes", "")),
    )


def catalog() -> list[CatalogEntry]:
    """Every registered µNF (library and ``$MICRONF_NF_MODULES``), by name."""
    load_library()
    return [entry(cls) for _, cls in sorted(MicroNF.registry.items())]
