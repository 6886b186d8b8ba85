"""The orchestrator's input files (paper §IV-D1): µNF descriptors, VNF templates and SFC requests.

Three kinds of file, told apart by their ``kind`` field, each in JSON or YAML:

- ``unf-descriptor``: a µNF declared outside the library (its type name, descriptor, labels and
  drop reasons), so templates can use it and the optimizer can reason about it. The library's own
  µNFs need no file: their descriptors live on their classes.
- ``vnf-template``: a VNF as a graph of µNF nodes (type + config) with links labelled by the
  source's egress label, an entry node, and named outputs (the node labels that leave the VNF).
- ``sfc``: the operator's request: VNF nodes (each an instance of a template, with placement hints
  and config overrides) and links from one VNF's output to the next VNF; ``imports`` names the
  template and descriptor files it uses.

These are shapes only; :mod:`micronf.orchestrator.load` reads the files and checks what a shape
cannot (known types, labels, links, cycles). Every problem is a :class:`~micronf.documents.SpecError` naming the file,
the field path (``vnfs[2].template``), what was expected and what was found.

The result of composing them (:mod:`micronf.orchestrator.compose`) is shaped here too:
:class:`Composition`, the graph before and after optimization (:class:`ComposedGraph`) and every
:class:`Rewrite` between them.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from micronf.runtime.descriptor import Descriptor
from micronf.runtime.graph import GraphSpec

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
NAME_TEXT = "a name of letters, digits, _ and - that starts with a letter or _"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UNFDescriptorFile(_Strict):
    """A µNF declared outside the library: what the orchestrator needs to compose and optimize it."""

    kind: Literal["unf-descriptor"]
    type: str = Field(pattern=NAME_PATTERN, description="the µNF type name templates use")
    summary: str = ""
    descriptor: Descriptor = Field(description="statefulness, per-region access (§IV-D), whether it may drop")
    labels: list[str] = Field(default_factory=lambda: ["out"], min_length=1, description="egress labels")
    drop_reasons: list[str] = Field(default_factory=list)


class TemplateNode(_Strict):
    """One µNF of a VNF template."""

    name: str = Field(pattern=NAME_PATTERN,
                      description="unique in the template; the composed graph prefixes it with the VNF name")
    type: str = Field(description="a µNF type: the library's (`micronf nfs`) or one from a descriptor file")
    config: dict[str, Any] = Field(default_factory=dict, description="the µNF's config (its Config model)")


class TemplateLink(_Strict):
    """Packets that ``src`` labels ``label`` go to ``dst`` (§IV-D: labels act as filters)."""

    src: str
    label: str | None = Field(None, description="an egress label of src; may be left out when src has only one")
    dst: str


class VNFTemplate(_Strict):
    """A VNF built from µNFs (§IV-D1, Fig. 1(b))."""

    kind: Literal["vnf-template"]
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    nodes: list[TemplateNode] = Field(min_length=1)
    links: list[TemplateLink] = Field(default_factory=list)
    entry: str | None = Field(None, description="the node packets enter by (default: the first node)")
    outputs: dict[str, list[str]] = Field(
        description='named outputs of the VNF, each a list of "node" or "node.label" endpoints: the labels that '
        "leave the VNF (every label of every node is either linked or an output)",
        min_length=1,
    )


class Placement(_Strict):
    """Where to run a µNF: hints for the placement step (both optional)."""

    agent: str | None = Field(None, description="the agent (machine) to run on")
    cpu: int | None = Field(None, ge=0, description="the CPU to pin to")


class VNFNode(_Strict):
    """One VNF of an SFC: an instance of a template."""

    name: str = Field(pattern=NAME_PATTERN, description="unique in the SFC; prefixes the names of its µNFs")
    template: str = Field(description="the name of a VNF template from the imported files")
    placement: Placement | None = Field(None, description="hint for every µNF of this VNF")
    unfs: dict[str, Placement] = Field(default_factory=dict, description="hints per template node (override)")
    config: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per template node: config keys that override the template's")


class SFCLink(_Strict):
    """The packets of ``src``'s output ``label`` go on to VNF ``dst``."""

    src: str
    label: str = Field("out", description="a named output of src's template")
    dst: str


class SFCRequest(_Strict):
    """A service function chain (§IV-D1): VNFs and labelled links between them."""

    kind: Literal["sfc"]
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    imports: list[str] = Field(
        default_factory=list,
        description="template and µNF descriptor files (paths or glob patterns, relative to this file)")
    vnfs: list[VNFNode] = Field(min_length=1)
    links: list[SFCLink] = Field(default_factory=list)
    entry: str | None = Field(None, description="the VNF traffic enters (default: the one no link leads to)")


KINDS: dict[str, type[_Strict]] = {
    "unf-descriptor": UNFDescriptorFile,
    "vnf-template": VNFTemplate,
    "sfc": SFCRequest,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each file kind (what ``micronf schema`` prints)."""
    return {kind: model.model_json_schema() for kind, model in KINDS.items()}


# -- the result of composition (micronf.orchestrator.compose) ---------------------------------
RewriteKind = Literal["remove", "consolidate", "parallelize"]


class Rewrite(BaseModel):
    """One optimization step: what was done to which nodes, and why it keeps the semantics."""

    model_config = ConfigDict(frozen=True)

    kind: RewriteKind
    nodes: list[str]  # the nodes rewritten: removed node / surviving node + merged ones / parallel branches
    reason: str


class ComposedGraph(BaseModel):
    """A µNF graph for an SFC: the spec, which exits are which SFC outputs, and placement hints."""

    model_config = ConfigDict(frozen=True)

    spec: GraphSpec
    outputs: dict[str, list[tuple[str, str]]]  # SFC output ("appfw.web") -> its exits (node, label)
    placement: dict[str, Placement]  # hints per node (only nodes that have some)

    def output_of(self, node: str, label: str) -> str | None:
        """The SFC output the exit ``(node, label)`` belongs to, if it is one."""
        return self._output_by_exit.get((node, label))

    @cached_property
    def _output_by_exit(self) -> dict[tuple[str, str], str]:
        """``outputs`` inverted (built once: callers ask for every exit of graphs with thousands)."""
        return {end: name for name, endpoints in reversed(self.outputs.items()) for end in endpoints}


class Composition(BaseModel):
    """The unoptimized and the optimized graph of an SFC, and the rewrites between them."""

    model_config = ConfigDict(frozen=True)

    sfc: str
    before: ComposedGraph
    after: ComposedGraph
    rewrites: list[Rewrite]

    def nodes_rewritten(self, kind: RewriteKind) -> list[list[str]]:
        """The ``nodes`` of every rewrite of one kind, in order."""
        return [r.nodes for r in self.rewrites if r.kind == kind]
