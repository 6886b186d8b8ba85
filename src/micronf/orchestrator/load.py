"""Read and check the orchestrator's input files: one error, naming file, field, expected and found.

:func:`load_sfc` reads an SFC request, the template and µNF descriptor files it imports, and checks
everything a pydantic shape cannot: µNF types exist (library or descriptor file), configs are valid
for their µNF (its own ``Config`` model), links join existing nodes with labels the source has,
every label of every node goes somewhere (a link or a named output), there is no cycle, every node
is reachable, templates and outputs named by the SFC exist. The first problem found is raised as a
:class:`~micronf.orchestrator.models.SpecError`; the result is an :class:`SFCBundle` whose
templates are normalized (every link label and output endpoint spelled out, the entry set), which
is what :mod:`micronf.orchestrator.compose` builds the graph from.
"""

from __future__ import annotations

import json
import re
import types as pytypes
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from glob import glob
from pathlib import Path, PurePosixPath
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from micronf.documents import SpecError, parse_document, read_document, show
from micronf.orchestrator.models import (
    KINDS,
    NAME_PATTERN,
    NAME_TEXT,
    SFCRequest,
    TemplateLink,
    UNFDescriptorFile,
    VNFTemplate,
)
from micronf.runtime.descriptor import Descriptor
from micronf.runtime.digraph import find_cycle
from micronf.runtime.nf import MicroNF, load_library
from micronf.validation import field_path

_NAME = re.compile(NAME_PATTERN)


# -- µNF types ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UNFType:
    """What composition needs to know about a µNF type, from its class or its descriptor file."""

    name: str
    descriptor: Descriptor
    labels: tuple[str, ...]
    drop_reasons: tuple[str, ...]
    config_model: type[BaseModel] | None  # None: declared by a descriptor file, config not checked here
    origin: str  # "library" or the descriptor file

    def config_key(self, config: Mapping[str, Any]) -> str:
        """The config in canonical form (defaults filled in, normalized values), for equality tests."""
        value = dict(config) if self.config_model is None else self.config_model.model_validate(dict(config))
        dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return json.dumps(dumped, sort_keys=True)


def library_types() -> dict[str, UNFType]:
    """Every registered µNF class (the library and ``$MICRONF_NF_MODULES``) as a :class:`UNFType`."""
    load_library()
    return {name: _type_of_class(cls) for name, cls in sorted(MicroNF.registry.items())}


def _type_of_class(cls: type[MicroNF]) -> UNFType:
    return UNFType(cls.__name__, cls.descriptor, cls.labels, cls.drop_reasons, cls.Config, "library")


def _declared_type(doc: UNFDescriptorFile, file: str, known: Mapping[str, UNFType]) -> UNFType:
    declared = UNFType(doc.type, doc.descriptor, tuple(doc.labels), tuple(doc.drop_reasons), None, file)
    for field, values in (("labels", doc.labels), ("drop_reasons", doc.drop_reasons)):
        if len(set(values)) != len(values):
            raise SpecError(file, field, "names that differ from each other", show(values))
    if doc.drop_reasons and not doc.descriptor.may_drop:
        raise SpecError(file, "descriptor.may_drop", "true, since drop_reasons are declared", "false")
    have = known.get(doc.type)
    if have is not None:
        mine = (declared.descriptor, declared.labels, declared.drop_reasons)
        if (have.descriptor, have.labels, have.drop_reasons) != mine:
            raise SpecError(file, "type", f"a µNF not already declared differently (by {have.origin})",
                            show(doc.type))
    return declared


InputFile = UNFDescriptorFile | VNFTemplate | SFCRequest


def load_file(path: Path | str) -> InputFile:
    """Read one input file and validate its shape (see :func:`check_document`)."""
    return check_document(read_document(Path(path)), str(path))


def check_document(data: Any, file: str) -> InputFile:
    """Validate the shape of one parsed input file; its ``kind`` field says which model applies."""
    if not isinstance(data, dict):
        raise SpecError(file, "", "a mapping with a kind field", type(data).__name__)
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        found = "no kind field" if "kind" not in data else show(kind)
        raise SpecError(file, "kind", f"one of {', '.join(KINDS)}", found)
    model = KINDS[kind]
    try:
        doc = model.model_validate(data)
    except ValidationError as exc:
        raise error_from_validation(exc, file, model) from None
    assert isinstance(doc, InputFile)
    return doc


def error_from_validation(exc: ValidationError, file: str, model: type[BaseModel], prefix: str = "") -> SpecError:
    """The first error of a pydantic validation as a :class:`SpecError` (path under ``prefix``)."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains a "missing"
    loc = tuple(err["loc"])
    path = field_path(loc, prefix)
    kind, msg = err["type"], err["msg"]
    found = show(err.get("input"))
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        fields = ", ".join(parent.model_fields) if parent is not None else "a known field"
        return SpecError(file, path, f"one of the fields {fields}", f"unknown field {loc[-1]!r}")
    if kind == "missing":
        return SpecError(file, path, "a value (the field is required)", "nothing")
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return SpecError(file, path, NAME_TEXT, found)
    if kind == "too_short":
        return SpecError(file, path, f"at least {err['ctx']['min_length']} item(s)", found)
    if msg.startswith("Input should be "):
        return SpecError(file, path, msg.removeprefix("Input should be "), found)
    if kind == "value_error":
        why = msg.removeprefix("Value error, ")
        return SpecError(file, path, "a valid value", why if found in why else f"{found}: {why}")
    return SpecError(file, path, msg[:1].lower() + msg[1:], found)


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The pydantic model at ``loc`` inside ``model`` (to list the fields it allows), if any."""
    ann: Any = model
    for part in loc:
        ann = _strip_optional(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = ann.model_fields.get(str(part))
            if field is None:
                return None
            ann = field.annotation
        elif get_origin(ann) in (list, dict):
            ann = get_args(ann)[-1]
        else:
            return None
    ann = _strip_optional(ann)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _strip_optional(ann: Any) -> Any:
    if get_origin(ann) in (Union, pytypes.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _one_of(what: str, names: Iterable[str]) -> str:
    listed = ", ".join(names)
    return f"{what} ({listed})" if listed else f"{what} (there are none)"


def check_config(unf: UNFType, config: Mapping[str, Any], file: str, prefix: str) -> None:
    """Validate a µNF's config with the µNF's own Config model (descriptor-file types: unchecked)."""
    if unf.config_model is None:
        return
    try:
        unf.config_model.model_validate(dict(config))
    except ValidationError as exc:
        raise error_from_validation(exc, file, unf.config_model, prefix) from None


# -- graph helpers ------------------------------------------------------------------------------
def successors(links: Iterable[tuple[str, str]], nodes: Iterable[str]) -> dict[str, list[str]]:
    """``nodes`` (in order) -> the destinations of their ``(src, dst)`` links, in link order."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in links:
        succ[src].append(dst)
    return succ


def reachable(succ: Mapping[str, Iterable[str]], start: str) -> set[str]:
    """Every node reachable from ``start`` (included)."""
    seen = {start}
    todo = [start]
    while todo:
        for m in succ.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


# -- templates ----------------------------------------------------------------------------------
def check_template(tpl: VNFTemplate, file: str, types: Mapping[str, UNFType]) -> VNFTemplate:
    """Check a template against the known µNF types; return it normalized (labels, endpoints, entry)."""
    node_type: dict[str, UNFType] = {}
    for i, node in enumerate(tpl.nodes):
        if node.name in node_type:
            raise SpecError(file, f"nodes[{i}].name", "a name no other node of the template has", show(node.name))
        if node.type not in types:
            raise SpecError(file, f"nodes[{i}].type", _one_of("a known µNF type", sorted(types)), show(node.type))
        node_type[node.name] = types[node.type]
        check_config(types[node.type], node.config, file, f"nodes[{i}].config")
    names = list(node_type)

    def labels_of(node: str) -> str:
        return _one_of(f"a label of {node} ({node_type[node].name})", node_type[node].labels)

    entry = tpl.entry or names[0]
    if entry not in node_type:
        raise SpecError(file, "entry", _one_of("a node of this template", names), show(entry))
    used: dict[tuple[str, str], str] = {}  # (node, label) -> where it goes
    links = []
    for i, link in enumerate(tpl.links):
        for end in ("src", "dst"):
            if getattr(link, end) not in node_type:
                raise SpecError(file, f"links[{i}].{end}", _one_of("a node of this template", names),
                                show(getattr(link, end)))
        src_labels = node_type[link.src].labels
        label = link.label if link.label is not None else (src_labels[0] if len(src_labels) == 1 else None)
        if label is None:
            raise SpecError(file, f"links[{i}].label", labels_of(link.src), "no label")
        if label not in src_labels:
            raise SpecError(file, f"links[{i}].label", labels_of(link.src), show(label))
        if (link.src, label) in used:
            raise SpecError(file, f"links[{i}]", f"one link for {link.src}.{label} (the optimizer adds parallelism)",
                            f"a second one, to {link.dst}")
        used[(link.src, label)] = f"link to {link.dst}"
        links.append(TemplateLink(src=link.src, label=label, dst=link.dst))
    outputs: dict[str, list[str]] = {}
    for out, endpoints in tpl.outputs.items():
        if not _NAME.match(out):
            raise SpecError(file, f"outputs.{out}", "an output " + NAME_TEXT, show(out))
        outputs[out] = []
        for k, text in enumerate(endpoints):
            where = f"outputs.{out}[{k}]"
            owner, _, label = text.partition(".")
            if owner not in node_type:
                raise SpecError(file, where, _one_of('"node" or "node.label" with a node of this template', names),
                                show(text))
            if not label:
                if len(node_type[owner].labels) != 1:
                    raise SpecError(file, where, f'"{owner}.<label>" with ' + labels_of(owner), show(text))
                label = node_type[owner].labels[0]
            if label not in node_type[owner].labels:
                raise SpecError(file, where, labels_of(owner), show(label))
            if (owner, label) in used:
                raise SpecError(file, where, f"a label not used elsewhere ({owner}.{label} is already the "
                                f"{used[(owner, label)]})", show(text))
            used[(owner, label)] = f"output {out!r}"
            outputs[out].append(f"{owner}.{label}")
    for owner, unf in node_type.items():
        for label in unf.labels:
            if (owner, label) not in used:
                raise SpecError(file, "outputs", f"every label of every node linked or listed in an output "
                                f"(label {label!r} of {owner} is neither)", show(tpl.outputs))
    succ = successors(((lk.src, lk.dst) for lk in links), names)
    cycle = find_cycle(succ)
    if cycle is not None:
        raise SpecError(file, "links", "links without a cycle", "the cycle " + " -> ".join(cycle))
    into_entry = [i for i, lk in enumerate(links) if lk.dst == entry]
    if into_entry:
        raise SpecError(file, f"links[{into_entry[0]}].dst", f"a node other than the entry {entry!r}", show(entry))
    seen = reachable(succ, entry)
    for i, n in enumerate(names):
        if n not in seen:
            raise SpecError(file, f"nodes[{i}]", f"a node reachable from the entry {entry!r}", f"{n!r}, unreachable")
    return tpl.model_copy(update={"links": links, "outputs": outputs, "entry": entry})


# -- SFC requests -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourcedTemplate:
    """A checked, normalized template and the file it came from."""

    template: VNFTemplate
    file: str


@dataclass(frozen=True)
class SFCBundle:
    """An SFC request with everything it refers to, checked."""

    sfc: SFCRequest
    file: str
    templates: dict[str, SourcedTemplate]
    types: dict[str, UNFType]

    @property
    def entry(self) -> str:
        """The VNF traffic enters (set by :func:`load_sfc`)."""
        assert self.sfc.entry is not None
        return self.sfc.entry


def load_sfc(path: Path | str) -> SFCBundle:
    """Read an SFC request file and the files its imports match (glob patterns relative to its
    directory), check them all, and return the bundle."""
    path = Path(path)
    file = str(path)
    sfc = _request(load_file(path), file)
    imported: list[tuple[str, InputFile]] = []
    for i, pattern in enumerate(sfc.imports):
        matches = sorted(glob(str(path.parent / pattern)))
        if not matches:
            raise SpecError(file, f"imports[{i}]", f"a file or pattern matching a file (relative to {path.parent})",
                            show(pattern))
        imported += [(m, load_file(m)) for m in matches]
    return _bundle(sfc, file, imported)


REQUEST_FILE = "request.sfc.yaml"
"""The name errors give an SFC request sent as text (``request.sfc.json``: sent as an object)."""


def load_sources(sfc: str | dict[str, Any], files: Mapping[str, str]) -> SFCBundle:
    """Check an SFC request given as YAML/JSON text or as the object itself, with the files it
    imports given as relative path -> text (what a client sends the orchestrator): all in memory,
    so imports can only name files sent with it (glob patterns matched against those paths, one
    path segment per ``*``; no absolute path, no ``..``). Errors name the files by these paths."""
    name = REQUEST_FILE if isinstance(sfc, str) else REQUEST_FILE.replace(".yaml", ".json")
    for rel in files:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or not p.parts or "\0" in rel:
            raise SpecError(f"files[{rel!r}]", "", "a relative path inside the SFC's directory", repr(rel))
    if name in files:
        raise SpecError(f"files[{name!r}]", "", "a file name other than the request's own", "that")
    try:
        doc = _request(check_document(parse_document(sfc, name) if isinstance(sfc, str) else sfc, name), name)
        imported: list[tuple[str, InputFile]] = []
        for i, pattern in enumerate(doc.imports):
            if PurePosixPath(pattern).is_absolute() or ".." in PurePosixPath(pattern).parts:
                raise SpecError(name, f"imports[{i}]", "a relative path or pattern without '..'", show(pattern))
            matches = sorted(rel for rel in files if _glob_match(pattern, rel))
            if not matches:
                raise SpecError(name, f"imports[{i}]", "a file or pattern matching a file (among the files sent)",
                                show(pattern))
            imported += [(m, check_document(parse_document(files[m], m), m)) for m in matches]
        return _bundle(doc, name, imported)
    except RecursionError:  # an object nested thousands deep
        raise SpecError(name, "", "a document nested less deeply", "deeper nesting") from None


def _request(doc: InputFile, file: str) -> SFCRequest:
    """``doc`` if it is an SFC request (any other kind of file is an error)."""
    if not isinstance(doc, SFCRequest):
        raise SpecError(file, "kind", "sfc", show(doc.kind))
    return doc


def _glob_match(pattern: str, path: str) -> bool:
    """Whether the relative ``path`` matches the glob ``pattern`` as :func:`glob.glob` would on disk:
    segment by segment (``*`` never crosses a ``/``), a leading dot matched only by a dot."""
    pat = [p for p in PurePosixPath(pattern).parts if p != "."]
    parts = PurePosixPath(path).parts
    return len(pat) == len(parts) and all(
        fnmatchcase(n, p) and (p.startswith(".") or not n.startswith(".")) for p, n in zip(pat, parts, strict=True))


def _bundle(sfc: SFCRequest, file: str, imported: list[tuple[str, InputFile]]) -> SFCBundle:
    """Check an SFC request (``file``) with the files it imported (name, parsed), in order."""
    types = library_types()
    for f, doc in imported:
        if isinstance(doc, UNFDescriptorFile):
            types[doc.type] = _declared_type(doc, f, types)
    templates: dict[str, SourcedTemplate] = {}
    for f, doc in imported:
        if isinstance(doc, SFCRequest):
            raise SpecError(f, "kind", "vnf-template or unf-descriptor (imported by an SFC)", show(doc.kind))
        if isinstance(doc, VNFTemplate):
            if doc.name in templates:
                raise SpecError(f, "name", f"a template name not already defined by {templates[doc.name].file}",
                                show(doc.name))
            templates[doc.name] = SourcedTemplate(check_template(doc, f, types), f)
    sfc = _check_sfc(sfc, file, templates, types)
    return SFCBundle(sfc, file, templates, types)


def _check_sfc(sfc: SFCRequest, file: str, templates: Mapping[str, SourcedTemplate],
               types: Mapping[str, UNFType]) -> SFCRequest:
    vnf_template: dict[str, VNFTemplate] = {}
    for i, vnf in enumerate(sfc.vnfs):
        if vnf.name in vnf_template:
            raise SpecError(file, f"vnfs[{i}].name", "a name no other VNF of the SFC has", show(vnf.name))
        if vnf.template not in templates:
            raise SpecError(file, f"vnfs[{i}].template", _one_of("an imported template", sorted(templates)),
                            show(vnf.template))
        tpl = templates[vnf.template].template
        vnf_template[vnf.name] = tpl
        nodes = {n.name: n for n in tpl.nodes}
        for field in ("unfs", "config"):
            for key in getattr(vnf, field):
                if key not in nodes:
                    raise SpecError(file, f"vnfs[{i}].{field}.{key}", _one_of(f"a node of template {tpl.name}", nodes),
                                    show(key))
        for key, override in vnf.config.items():
            check_config(types[nodes[key].type], {**nodes[key].config, **override}, file, f"vnfs[{i}].config.{key}")
    names = list(vnf_template)
    linked: set[tuple[str, str]] = set()
    for i, link in enumerate(sfc.links):
        for end in ("src", "dst"):
            if getattr(link, end) not in vnf_template:
                raise SpecError(file, f"links[{i}].{end}", _one_of("a VNF of this SFC", names),
                                show(getattr(link, end)))
        outs = vnf_template[link.src].outputs
        if link.label not in outs:
            raise SpecError(file, f"links[{i}].label",
                            _one_of(f"an output of {link.src} (template {vnf_template[link.src].name})", outs),
                            show(link.label))
        if not outs[link.label]:
            raise SpecError(file, f"links[{i}].label", f"an output that some packets leave by (template "
                            f"{vnf_template[link.src].name} lists no endpoint for it)", show(link.label))
        if (link.src, link.label) in linked:
            raise SpecError(file, f"links[{i}]", f"one link for output {link.src}.{link.label}",
                            f"a second one, to {link.dst}")
        linked.add((link.src, link.label))
    succ = successors(((lk.src, lk.dst) for lk in sfc.links), names)
    cycle = find_cycle(succ)
    if cycle is not None:
        raise SpecError(file, "links", "links without a cycle", "the cycle " + " -> ".join(cycle))
    fed = {lk.dst for lk in sfc.links}
    heads = [n for n in names if n not in fed]
    entry = sfc.entry
    if entry is None:
        if len(heads) != 1:
            raise SpecError(file, "entry", "one VNF no link leads to, or an explicit entry",
                            f"{len(heads)} such VNFs ({', '.join(heads) or 'none'})")
        entry = heads[0]
    elif entry not in vnf_template:
        raise SpecError(file, "entry", _one_of("a VNF of this SFC", names), show(entry))
    elif entry not in heads:
        raise SpecError(file, "entry", "a VNF no link leads to", show(entry))
    seen = reachable(succ, entry)
    for i, n in enumerate(names):
        if n not in seen:
            raise SpecError(file, f"vnfs[{i}]", f"a VNF reachable from the entry {entry!r}", f"{n!r}, unreachable")
    return sfc.model_copy(update={"entry": entry})
