"""kubectl's -l grammar, by table."""

from __future__ import annotations

import pytest

from clusterset.model.selector import SelectorError, matches, parse

LABELS = {"app": "web", "tier": "front", "team": "a"}


@pytest.mark.parametrize(
    ("selector", "want"),
    [
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("nope!=x", True),  # kubectl: a missing key is not equal
        ("app", True),
        ("!app", False),
        ("!nope", True),
        ("app in (web,db)", True),
        ("app notin (web, db)", False),
        ("tier in (back)", False),
        ("app=web,tier=front", True),
        ("app=web, tier in (back,middle)", False),
        ("app=web,team notin (b),!owner", True),
        ("app=", False),  # an empty value is valid in kubectl: the label is ""
    ],
)
def test_selectors(selector: str, want: bool) -> None:
    assert matches(parse(selector), LABELS) is want


@pytest.mark.parametrize("bad", ["=web", "app in web", "a b"])
def test_unreadable_terms_are_named(bad: str) -> None:
    with pytest.raises(SelectorError, match="cannot read"):
        parse(bad)
