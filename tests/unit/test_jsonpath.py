"""kubectl's -o jsonpath subset, by table."""

from __future__ import annotations

import pytest

from clusterset.model.jsonpath import JsonPathError, render

DATA = {
    "exports": [
        {"cluster": "member1", "name": "web", "conditions": [{"type": "Valid"}]},
        {"cluster": "member2", "name": "db", "conditions": []},
    ],
    "errors": [],
    "n": 3,
}


@pytest.mark.parametrize(
    ("template", "want"),
    [
        ("{.exports[*].name}", "web db"),
        ("{.exports[0].cluster}", "member1"),
        ("{.exports[-1].name}", "db"),
        ("{.exports[*].conditions[*].type}", "Valid"),
        ('{.exports[0].name}{"\\n"}', "web\n"),
        ("names: {.exports[*].name} ({.n})", "names: web db (3)"),
        ("{.missing}", ""),
        ("{.errors}", "[]"),
        ("{.exports[9].name}", ""),
    ],
)
def test_templates(template: str, want: str) -> None:
    assert render(template, DATA) == want


@pytest.mark.parametrize(
    "template",
    [
        "{range .exports[*]}{.name}{end}",
        "{..name}",
        "{.exports[?(@.n)]}",
        "{name}",
        '{"\\q"}',
        '{"a" "b"}',
    ],
)
def test_unsupported_parts_are_named(template: str) -> None:
    with pytest.raises(JsonPathError):
        render(template, DATA)
