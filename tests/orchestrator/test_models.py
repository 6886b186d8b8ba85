"""Validation of the input files: a table of broken inputs, each with its full error message
(file, field path, what was expected, what was found); plus the schema and the file formats."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from micronf.documents import SpecError
from micronf.orchestrator.load import load_file, load_sfc
from micronf.orchestrator.models import KINDS, SFCRequest, VNFTemplate, json_schemas

from .sfcfiles import EXAMPLES, sfc, template, write_files

FW = template("fw", [("check", "CheckIPHeader", {}), ("filter", "L3L4Filter", {"default": "allow"})],
              [("check", None, "filter")], {"out": ["filter"]})
AF = template("af", [("check", "CheckIPHeader", {}), ("classify", "HttpClassifier", {}),
                     ("validate", "ValidateUrl", {})],
              [("check", None, "classify"), ("classify", "http", "validate")],
              {"web": ["validate"], "other": ["classify.other"]})
GOOD_SFC = sfc([{"name": "a", "template": "fw"}, {"name": "b", "template": "af"}], [("a", "out", "b")])


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with the item at ``path`` (``vnfs.0.template``) set, appended (one past
    the end of a list) or deleted (``...``)."""
    import copy

    out = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = out
    for p in parents:
        target = target[p]
    if value is ...:
        del target[last]
    elif isinstance(target, list) and last == len(target):
        target.append(value)
    else:
        target[last] = value
    return out


# (id, files over the good ones, expected message: {d} = the directory, "..." = any text)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-unf-type", {"templates/fw.yaml": _with(FW, "nodes.0.type", "CheckIpHeader")},
     "{d}/templates/fw.yaml: nodes[0].type: expected a known µNF type (BusyLoop, CheckIPHeader, ...), "
     "found 'CheckIpHeader'"),
    ("unknown-label", {"templates/af.yaml": _with(AF, "links.1.label", "web")},
     "{d}/templates/af.yaml: links[1].label: expected a label of classify (HttpClassifier) (http, other), "
     "found 'web'"),
    ("label-left-out", {"templates/af.yaml": _with(AF, "links.1.label", ...)},
     "{d}/templates/af.yaml: links[1].label: expected a label of classify (HttpClassifier) (http, other), "
     "found no label"),
    ("dangling-link", {"templates/fw.yaml": _with(FW, "links.0.dst", "nowhere")},
     "{d}/templates/fw.yaml: links[0].dst: expected a node of this template (check, filter), found 'nowhere'"),
    ("template-cycle", {"templates/loop.yaml": template(
        "loop", [("check", "CheckIPHeader", {}), ("ttl", "IPTtlDecrementer", {})],
        [("check", None, "ttl"), ("ttl", "out", "check")], {"out": ["ttl.expired"]})},
     "{d}/templates/loop.yaml: links: expected links without a cycle, found the cycle check -> ttl -> check"),
    ("label-goes-nowhere", {"templates/af.yaml": _with(AF, "outputs.other", [])},
     "{d}/templates/af.yaml: outputs: expected every label of every node linked or listed in an output "
     "(label 'other' of classify is neither), found ..."),
    ("output-of-unknown-node", {"templates/fw.yaml": _with(FW, "outputs.out", ["filtre"])},
     '{d}/templates/fw.yaml: outputs.out[0]: expected "node" or "node.label" with a node of this template '
     "(check, filter), found 'filtre'"),
    ("unreachable-node", {"templates/fw.yaml": _with(_with(FW, "nodes.2", {"name": "x", "type": "MacSwapper"}),
                                                     "outputs.out", ["filter", "x"])},
     "{d}/templates/fw.yaml: nodes[2]: expected a node reachable from the entry 'check', found 'x', unreachable"),
    ("bad-config-value", {"templates/fw.yaml": _with(FW, "nodes.1.config.default", "maybe")},
     "{d}/templates/fw.yaml: nodes[1].config.default: expected 'allow' or 'deny', found 'maybe'"),
    ("unknown-config-key", {"templates/fw.yaml": _with(FW, "nodes.1.config.colour", "red")},
     "{d}/templates/fw.yaml: nodes[1].config.colour: expected one of the fields rules, default, non_ip, "
     "found unknown field 'colour'"),
    ("bad-override", {"sfc.yaml": _with(GOOD_SFC, "vnfs.0.config", {"filter": {"rules": [{"action": "deny",
                                                                                           "src": "10.0.0.300/8"}]}})},
     "{d}/sfc.yaml: vnfs[0].config.filter.rules[0].src: expected a valid value, found '10.0.0.300/8' is not "
     '"any", an IPv4 address or a CIDR prefix ...'),
    ("override-of-unknown-node", {"sfc.yaml": _with(GOOD_SFC, "vnfs.0.config", {"filtre": {}})},
     "{d}/sfc.yaml: vnfs[0].config.filtre: expected a node of template fw (check, filter), found 'filtre'"),
    ("unknown-template", {"sfc.yaml": _with(GOOD_SFC, "vnfs.1.template", "appfw")},
     "{d}/sfc.yaml: vnfs[1].template: expected an imported template (af, fw), found 'appfw'"),
    ("field-typo", {"sfc.yaml": _with(_with(GOOD_SFC, "vnfs.1.tempalte", "af"), "vnfs.1.template", ...)},
     "{d}/sfc.yaml: vnfs[1].tempalte: expected one of the fields name, template, placement, unfs, config, "
     "found unknown field 'tempalte'"),
    ("missing-field", {"sfc.yaml": _with(GOOD_SFC, "vnfs.1.template", ...)},
     "{d}/sfc.yaml: vnfs[1].template: expected a value (the field is required), found nothing"),
    ("sfc-dangling-link", {"sfc.yaml": _with(GOOD_SFC, "links.0.dst", "c")},
     "{d}/sfc.yaml: links[0].dst: expected a VNF of this SFC (a, b), found 'c'"),
    ("sfc-unknown-output", {"sfc.yaml": _with(GOOD_SFC, "links.0.label", "web")},
     "{d}/sfc.yaml: links[0].label: expected an output of a (template fw) (out), found 'web'"),
    ("sfc-cycle", {"sfc.yaml": _with(GOOD_SFC, "links.1", {"src": "b", "label": "other", "dst": "a"})},
     "{d}/sfc.yaml: links: expected links without a cycle, found the cycle a -> b -> a"),
    ("two-heads", {"sfc.yaml": _with(GOOD_SFC, "links", [])},
     "{d}/sfc.yaml: entry: expected one VNF no link leads to, or an explicit entry, found 2 such VNFs (a, b)"),
    ("bad-name", {"sfc.yaml": _with(GOOD_SFC, "vnfs.0.name", "fire wall")},
     "{d}/sfc.yaml: vnfs[0].name: expected a name of letters, digits, _ and - that starts with a letter or _, "
     "found 'fire wall'"),
    ("negative-cpu", {"sfc.yaml": _with(GOOD_SFC, "vnfs.0.placement", {"cpu": -1})},
     "{d}/sfc.yaml: vnfs[0].placement.cpu: expected greater than or equal to 0, found -1"),
    ("no-vnfs", {"sfc.yaml": _with(GOOD_SFC, "vnfs", [])},
     "{d}/sfc.yaml: vnfs: expected at least 1 item(s), found []"),
    ("import-matches-nothing", {"sfc.yaml": _with(GOOD_SFC, "imports", ["templates/*", "tmpl/*.yaml"])},
     "{d}/sfc.yaml: imports[1]: expected a file or pattern matching a file (relative to {d}), found 'tmpl/*.yaml'"),
    ("no-kind", {"templates/fw.yaml": _with(FW, "kind", ...)},
     "{d}/templates/fw.yaml: kind: expected one of unf-descriptor, vnf-template, sfc, found no kind field"),
    ("yaml-syntax", {"sfc.yaml": "kind: sfc\nname: [x\n"},
     "{d}/sfc.yaml: (document): expected valid YAML, found expected ',' or ']', but got '<stream end>' "
     "at line 3, column 1"),
    ("json-syntax", {"templates/fw.yaml": "", "templates/fw.json": '{"kind": "vnf-template",}'},
     "{d}/templates/fw.json: (document): expected valid JSON, found Expecting property name enclosed in double "
     "quotes at line 1, column 25"),
    ("descriptor-drops-but-says-not", {"templates/z.yaml": {"kind": "unf-descriptor", "type": "Z",
                                                            "descriptor": {}, "drop_reasons": ["bad"]}},
     "{d}/templates/z.yaml: descriptor.may_drop: expected true, since drop_reasons are declared, found false"),
    ("descriptor-contradicts-library", {"templates/z.yaml": {"kind": "unf-descriptor", "type": "MacSwapper",
                                                             "descriptor": {"l2": "ReadOnly"}}},
     "{d}/templates/z.yaml: type: expected a µNF not already declared differently (by library), "
     "found 'MacSwapper'"),
]


def _matches(expected: str, message: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in expected.split("...")), message) is not None


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_input_is_reported_with_file_path_expected_and_found(tmp_path: Path, files: dict[str, Any],
                                                                    expected: str) -> None:
    write_files(tmp_path, {"templates/fw.yaml": FW, "templates/af.yaml": AF, "sfc.yaml": GOOD_SFC})
    for name in files:
        if files[name] == "":
            (tmp_path / name).unlink()
    write_files(tmp_path, {k: v for k, v in files.items() if v != ""})
    with pytest.raises(SpecError) as info:
        load_sfc(tmp_path / "sfc.yaml")
    want = expected.format(d=tmp_path)
    assert _matches(want, str(info.value)), f"\n got: {info.value}\nwant: {want}"
    err = info.value
    assert str(err) == f"{err.file}: {err.path or '(document)'}: expected {err.expected}, found {err.found}"


def test_the_good_files_load(tmp_path: Path) -> None:
    write_files(tmp_path, {"templates/fw.yaml": FW, "templates/af.yaml": AF, "sfc.yaml": GOOD_SFC})
    bundle = load_sfc(tmp_path / "sfc.yaml")
    assert bundle.entry == "a" and sorted(bundle.templates) == ["af", "fw"]
    assert bundle.templates["af"].template.outputs == {"web": ["validate.out"], "other": ["classify.other"]}


@pytest.mark.parametrize("name", ["fw.json", "fw.yml", "fw-no-extension"])
def test_json_and_yaml_by_extension_or_content(tmp_path: Path, name: str) -> None:
    import json

    import yaml

    text = json.dumps(FW) if not name.endswith(".yml") else yaml.safe_dump(FW)
    (tmp_path / name).write_text(text)
    doc = load_file(tmp_path / name)
    assert isinstance(doc, VNFTemplate) and doc.name == "fw"


def test_schemas_cover_the_three_kinds_and_accept_the_examples() -> None:
    schemas = json_schemas()
    assert set(schemas) == set(KINDS) == {"unf-descriptor", "vnf-template", "sfc"}
    assert {"vnfs", "links", "imports", "entry"} <= set(schemas["sfc"]["properties"])
    assert set(schemas["sfc"]["required"]) == {"kind", "name", "vnfs"}
    assert set(schemas["vnf-template"]["required"]) == {"kind", "name", "nodes", "outputs"}
    for path in EXAMPLES.glob("sfc-*.yaml"):
        assert isinstance(load_file(path), SFCRequest)
