"""Hypothesis over the orchestrator's input files: whatever the files say, loading and composing them
either works or raises one :class:`SpecError` whose message is one line; never another exception,
a hang or a recursion error. Inputs: a valid SFC with its templates and a µNF descriptor, mutated
(a value replaced anywhere, a key dropped or added, a list item repeated), and raw text, as YAML and
as JSON. Example counts are bounded so each test takes seconds."""

from __future__ import annotations

import copy
import glob
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from micronf.documents import MAX_DEPTH, SpecError, read_document
from micronf.orchestrator.compose import compose, compose_file
from micronf.orchestrator.load import REQUEST_FILE, _glob_match, load_sources
from micronf.runtime.graph import GraphError, plan

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FW = {"kind": "vnf-template", "name": "fw",
      "nodes": [{"name": "check", "type": "CheckIPHeader"},
                {"name": "filter", "type": "L3L4Filter", "config": {"default": "allow"}}],
      "links": [{"src": "check", "dst": "filter"}], "outputs": {"out": ["filter"]}}
MON = {"kind": "vnf-template", "name": "mon", "entry": "classify",
       "nodes": [{"name": "classify", "type": "HttpClassifier"}, {"name": "urls", "type": "CountUrl",
                                                                 "config": {"urls": ["/a"]}},
                 {"name": "zip", "type": "Zipper", "config": {"level": 3}}],
       "links": [{"src": "classify", "label": "http", "dst": "urls"}, {"src": "urls", "dst": "zip"}],
       "outputs": {"web": ["zip.out"], "other": ["classify.other"]}}
ZIP = {"kind": "unf-descriptor", "type": "Zipper", "labels": ["out"],
       "descriptor": {"stateful": False, "payload": "ReadWrite", "may_drop": False}}
SFC = {"kind": "sfc", "name": "s", "imports": ["t/*"],
       "vnfs": [{"name": "a", "template": "fw", "placement": {"cpu": 0}},
                {"name": "b", "template": "mon", "config": {"urls": {"urls": ["/b"]}}},
                {"name": "c", "template": "fw", "unfs": {"check": {"agent": "x"}}}],
       "links": [{"src": "a", "dst": "b"}, {"src": "b", "label": "web", "dst": "c"}]}
DOCS = {"sfc.yaml": SFC, "t/fw.yaml": FW, "t/mon.json": MON, "t/zip.yaml": ZIP}
WORDS = ["kind", "name", "nodes", "links", "outputs", "entry", "vnfs", "template", "src", "dst", "label", "type",
         "config", "imports", "placement", "unfs", "descriptor", "labels", "drop_reasons", "cpu", "agent", "sfc",
         "vnf-template", "unf-descriptor", "fw", "mon", "check", "filter", "classify", "urls", "zip", "a", "b", "c",
         "out", "web", "other", "http", "CheckIPHeader", "Zipper", "t/*", "default", "allow", "may_drop", "a.b",
         "filter.out", "classify.nope", ""]

scalars = (st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=True)
           | st.sampled_from(WORDS) | st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=4), inner, max_size=3),
                      max_leaves=8)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``doc`` (key or index paths), the document itself included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The documents of :data:`DOCS`, one to three of them changed at random places."""
    docs = copy.deepcopy(DOCS)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(docs)))
        path = draw(st.sampled_from(_paths(docs[name])))
        parent: Any = docs
        for key in (name, *path[:-1]):
            parent = parent[key]
        key = path[-1] if path else name
        action = draw(st.sampled_from(["replace", "delete", "add", "repeat"]))
        if action == "replace" or not path:
            parent[key] = draw(values)
        elif action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent[key], dict):
            parent[key][draw(st.sampled_from(WORDS))] = draw(values)
        elif action == "repeat" and isinstance(parent[key], list) and parent[key]:
            parent[key].append(copy.deepcopy(parent[key][draw(st.integers(0, len(parent[key]) - 1))]))
    return docs


def _write(directory: Path, docs: dict[str, Any]) -> Path:
    for name, doc in docs.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc))
    return directory / "sfc.yaml"


def _compose_or_spec_error(path: Path) -> None:
    """Load + compose from the files, and from their texts in memory as the orchestrator's API does,
    then wire the result: SpecError (one line) or a graph; GraphError is the runtime's word on what
    the composer produced (e.g. more branches than a Branch port has)."""
    texts = {f.relative_to(path.parent).as_posix(): f.read_text(encoding="utf-8", errors="surrogateescape")
             for f in path.parent.rglob("*") if f.is_file() and f != path}
    sfc = path.read_text(encoding="utf-8", errors="surrogateescape")
    for how, prefixes in ((lambda: compose_file(path), (str(path.parent),)),
                          (lambda: compose(load_sources(sfc, texts)), (REQUEST_FILE, *texts))):
        try:
            comp = how()
        except SpecError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(prefixes)
            continue
        try:
            plan(comp.after.spec)
        except GraphError as exc:
            assert "\n" not in str(exc)


def test_the_unmutated_documents_compose() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        comp = compose_file(_write(Path(tmp), DOCS))
    assert len(comp.after.spec.nodes) == 5  # c.check and c.filter repeat a.check and a.filter


@FUZZ
@given(mutated())
def test_mutated_documents_compose_or_fail_with_one_spec_error(docs: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _compose_or_spec_error(_write(Path(tmp), docs))


@FUZZ
@given(st.sampled_from(sorted(DOCS)), st.data())
def test_mangled_text_composes_or_fails_with_one_spec_error(name: str, data: st.DataObject) -> None:
    """The text of one file with characters inserted, deleted or replaced (YAML and JSON syntax errors,
    tags, anchors, tabs, control characters)."""
    text = json.dumps(DOCS[name]) if name.endswith(".json") else yaml.safe_dump(DOCS[name])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        syntax = st.sampled_from(list("[]{}:,-&*!|>'\"#%@ \t\n\x00\x85\ud7ff"))
        insert = data.draw(st.text(alphabet=syntax | st.characters(), max_size=3))
        text = text[:at] + insert + text[at + cut:]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _write(directory, {k: v for k, v in DOCS.items() if k != name})
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text, encoding="utf-8", errors="surrogateescape")
        _compose_or_spec_error(directory / "sfc.yaml")


@pytest.mark.parametrize(("name", "text", "found"), [
    ("deep.json", "[" * 100_000 + "]" * 100_000, f"nested deeper than {MAX_DEPTH}"),
    ("deep.json", "[" * 101 + "]" * 101, f"nested deeper than {MAX_DEPTH}"),
    ("deep.yaml", "[" * 100_000 + "]" * 100_000, f"nested deeper than {MAX_DEPTH}"),  # libyaml would crash
    ("deep.yaml", "- " * 100_000 + "x", f"nested deeper than {MAX_DEPTH}"),
    ("loop.yaml", "a: &x [*x]", f"nested deeper than {MAX_DEPTH}"),
    ("bomb.yaml", "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)), "aliases"),
    ("date.yaml", "a: 2024-01-01", "a value of type date"),
    ("set.yaml", "a: !!set {x}", "a value of type set"),
    ("key.yaml", "1: x", "a mapping key that is not a string (1)"),
    ("nul.yaml", "a: \x00", "unacceptable character #x0000"),
    ("tag.yaml", "a: !!python/object:os.system x", "could not determine a constructor"),
    ("latin1.yaml", b"a: \xff", "UnicodeDecodeError"),
])
def test_documents_that_are_not_plain_data_are_one_spec_error(tmp_path: Path, name: str, text: str | bytes,
                                                              found: str) -> None:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(SpecError) as err:
        read_document(path)
    assert found in err.value.found and "\n" not in str(err.value)


@pytest.mark.parametrize(("pattern", "found"), [
    ("/etc/*", "expected a relative path or pattern without '..', found '/etc/*'"),
    ("../*", "expected a relative path or pattern without '..', found '../*'"),
    ("/etc/hosts", "expected a relative path or pattern without '..', found '/etc/hosts'"),
    ("t/*", "expected a file or pattern matching a file (among the files sent), found 't/*'"),
])
def test_files_sent_to_the_orchestrator_import_nothing_outside(pattern: str, found: str) -> None:
    """An SFC sent through the API names its imports among the files sent with it, in memory: an
    absolute path or ``..`` is refused, and nothing on the orchestrator's disk is ever matched."""
    with pytest.raises(SpecError, match=re.escape(found)):
        load_sources({**SFC, "imports": [pattern]}, {"x/hosts": "kind: vnf-template"})


@pytest.mark.parametrize(("pattern", "matched"), [
    ("t/*", ["t/fw.yaml", "t/mon.json", "t/zip.yaml"]), ("t/*.yaml", ["t/fw.yaml", "t/zip.yaml"]),
    ("./t/fw.yaml", ["t/fw.yaml"]), ("*", ["top.yaml"]), ("t/?w.yaml", ["t/fw.yaml"]), ("*/*", None),
])
def test_imports_sent_in_memory_match_as_glob_matches_on_disk(tmp_path: Path, pattern: str,
                                                              matched: list[str] | None) -> None:
    """The in-memory import patterns match what :func:`glob.glob` matches in a directory holding the
    same files (``*`` within one path segment, hidden files only by a leading dot)."""
    files = {"t/fw.yaml": FW, "t/mon.json": MON, "t/zip.yaml": ZIP, "top.yaml": FW, "t/.hidden.yaml": FW}
    _write(tmp_path, files)
    on_disk = sorted(Path(m).relative_to(tmp_path).as_posix() for m in glob.glob(str(tmp_path / pattern))
                     if Path(m).is_file())
    assert matched is None or on_disk == matched
    assert sorted(f for f in files if _glob_match(pattern, f)) == on_disk
