"""Chain expressions and config files."""

from __future__ import annotations

from pathlib import Path

import pytest

from micronf.runtime.chainexpr import ChainSyntaxError, load_config_file, merge_configs, parse_chain


def test_names_and_inline_literals() -> None:
    got = parse_chain('CheckIPHeader -> L3L4Filter(default="allow", rules=[{"action": "deny", "dport": "23"}])'
                      " -> BusyLoop(cycles=300)")
    assert got == [("CheckIPHeader", {}),
                   ("L3L4Filter", {"default": "allow", "rules": [{"action": "deny", "dport": "23"}]}),
                   ("BusyLoop", {"cycles": 300})]


@pytest.mark.parametrize(("expr", "message"), [
    ("", "empty element"),
    ("A -> -> B", "empty element"),
    ("A(1)", "expected Name or Name"),
    ("A(x=open('f'))", "must be a literal"),
    ("A(**x)", "'\\*\\*' is not allowed"),
    ("A B", "element 1"),
])
def test_bad_expressions(expr: str, message: str) -> None:
    with pytest.raises(ChainSyntaxError, match=message):
        parse_chain(expr)


def test_config_file_merge(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("BusyLoop:\n  cycles: 50\nMacSwapper1: {}\n")
    cfg = load_config_file(f)
    merged = merge_configs([("BusyLoop", {}), ("MacSwapper", {}), ("MacSwapper", {})],
                           ["BusyLoop", "MacSwapper0", "MacSwapper1"], cfg)
    assert merged[0] == ("BusyLoop", {"cycles": 50})
    with pytest.raises(ChainSyntaxError, match="both inline and in the config file"):
        merge_configs([("BusyLoop", {"cycles": 1})], ["BusyLoop"], {"BusyLoop": cfg["BusyLoop"]})
    with pytest.raises(ChainSyntaxError, match="not in the chain"):
        merge_configs([("MacSwapper", {})], ["MacSwapper"], {"Nope": {}})


def test_bad_config_files(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ChainSyntaxError, match="not valid JSON"):
        load_config_file(tmp_path / "a.json")
    (tmp_path / "b.yaml").write_text("- a\n- b\n")
    with pytest.raises(ChainSyntaxError, match="expected a mapping"):
        load_config_file(tmp_path / "b.yaml")
    with pytest.raises(ChainSyntaxError, match="No such file"):
        load_config_file(tmp_path / "missing.yaml")
