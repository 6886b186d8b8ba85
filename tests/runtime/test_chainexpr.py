"""Chain expressions and config files; hypothesis: any text is a chain or one ChainSyntaxError."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from micronf.runtime.chainexpr import ChainSyntaxError, load_config_file, merge_configs, parse_chain

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIECES = ["A", "B1", "->", "(", ")", "=", ",", "x", "y", "1", "-", "'s'", '"', "[", "]", "{", "}", ":", ".", "*",
          "**", "None", "True", "1e999", "1j", "b'z'", "...", "lambda", " ", "\n", "\x00", "\ud800", "#", "f(1)"]


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
    ("A(x={[1]: 2})", "must be a literal"),  # literal_eval raised TypeError
    ("A(x=1, x=2)", "'x' is given twice"),  # the second value silently won
    ("A(x={1, 2})", "must be a literal"),  # a set, a tuple, complex, inf: not JSON config values
    ("A(x=(1, 2))", "must be a literal"),
    ("A(x=1e999)", "must be a literal"),
    ("A(x='\ud800')", "text Python cannot read"),  # UnicodeEncodeError
    ("A(x=" + "-" * 10_000 + "1)", "nested too deeply"),  # MemoryError in the parser
    ("A(x=" + "[" * 300 + "]" * 300 + ")", "too many nested parentheses"),
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
    with pytest.raises(ChainSyntaxError, match="expected valid JSON"):
        load_config_file(tmp_path / "a.json")
    (tmp_path / "b.yaml").write_text("- a\n- b\n")
    with pytest.raises(ChainSyntaxError, match="expected a mapping"):
        load_config_file(tmp_path / "b.yaml")
    with pytest.raises(ChainSyntaxError, match="No such file"):
        load_config_file(tmp_path / "missing.yaml")


def _plain(value: Any) -> bool:
    return json.loads(json.dumps(value, allow_nan=False)) == value  # JSON round trip (tuples, sets... fail)


@FUZZ
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=12).map("".join))
def test_any_text_is_a_chain_or_one_syntax_error(expr: str) -> None:
    try:
        chain = parse_chain(expr)
    except ChainSyntaxError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    assert chain and all(name.isidentifier() and isinstance(config, dict) for name, config in chain)
    assert all(_plain(config) and not any(isinstance(v, float) and not math.isfinite(v) for v in config.values())
               for _, config in chain)


@FUZZ
@given(st.text(max_size=40), st.sampled_from(["c.yaml", "c.json"]))
def test_any_config_file_is_configs_or_one_syntax_error(text: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            configs = load_config_file(path)
        except ChainSyntaxError as exc:
            assert "\n" not in str(exc)
            return
    assert all(isinstance(k, str) and isinstance(v, dict) and _plain(v) for k, v in configs.items())
