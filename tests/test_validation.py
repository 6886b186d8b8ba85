"""The one way pydantic errors are put in words (µNF configs, I/O specs, HTTP 422s, input files)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from micronf.validation import describe_validation_errors, field_path


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str
    port: int = 0


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[_Rule]
    name: str = "x"


def _errors(data: object) -> list[dict[str, object]]:
    with pytest.raises(ValidationError) as err:
        _Config.model_validate(data)
    return [dict(e) for e in err.value.errors()]


def test_field_paths_index_lists_and_dot_fields() -> None:
    assert field_path(("vnfs", 2, "template")) == "vnfs[2].template"
    assert field_path((0, "a"), "rx") == "rx[0].a" and field_path(("a",), "rx") == "rx.a"
    assert field_path(()) == ""


def test_each_error_is_one_line_naming_field_problem_and_value() -> None:
    errors = _errors({"rules": [{"action": "deny", "port": "eighty", "colour": "red"}], "nmae": 1})
    text = describe_validation_errors(errors)
    assert text.split("; ") == [
        "rules[0].port: Input should be a valid integer, unable to parse string as an integer (got 'eighty')",
        "rules[0].colour: Extra inputs are not permitted (got 'red')",
        "nmae: Extra inputs are not permitted (got 1)",
    ]
    assert describe_validation_errors(_errors({}), where="cfg") == "cfg.rules: Field required"  # nothing to quote


def test_long_inputs_and_many_errors_are_bounded() -> None:
    errors = _errors({"rules": [{"action": "a" * 10, "port": "p" * 1000}] + [{"port": i} for i in range(30)]})
    lines = describe_validation_errors(errors, max_errors=5, limit=80).split("; ")
    assert len(lines) == 6 and lines[-1] == f"and {len(errors) - 5} more errors"
    assert lines[0].startswith("rules[0].port: ") and lines[0].endswith(" characters)")
    assert all(len(line) <= 80 + len("... (1234 characters)") for line in lines)
