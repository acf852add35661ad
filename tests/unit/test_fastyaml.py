"""fastyaml: serde_yaml's reading is used only where it equals PyYAML's, and it is used."""

from __future__ import annotations

import pickle
import random
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterset.manifests import fastyaml, load
from clusterset.manifests.load import MAX_DEPTH
from tests.stress import yaml_gen

ROOT = Path(__file__).resolve().parents[2]


def pyyaml(text: str) -> list[Any] | str:
    try:
        return list(yaml.load_all(text, Loader=yaml.CSafeLoader))
    except Exception as exc:  # what PyYAML refuses, the fast path must decline
        return f"error: {type(exc).__name__}"


def typed(value: Any) -> Any:
    """`value` with every scalar's type kept: `==` alone takes True for 1 and 1 for 1.0."""
    if isinstance(value, dict):
        return {typed(k): typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def agrees(text: str) -> bool:
    """The fast reading declines or equals PyYAML's (types too); True when it was taken."""
    fast = fastyaml.documents(text, MAX_DEPTH)
    if fast is not None:
        assert typed(fast) == typed(pyyaml(text)), text
        assert [d for _i, d, _p in load._documents(text)] == fast
    return fast is not None


SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x1
  namespace: default
  labels: {kubernetes.io/service-name: web, enabled: "true", port: "80"}
  annotations:
    note: "yes"
    when: "2026-11-01T10:00:00Z"
  creationTimestamp: "2026-11-01T10:00:00Z"
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
  - addresses: ["10.0.0.1"]
    conditions: {ready: true, serving: True, terminating: false}
    hostname: web-0
  - addresses: [10.0.0.2]
    zone: ~
"""

# Texts serde_yaml (YAML 1.2, no merge keys or tags) reads otherwise than PyYAML (YAML 1.1).
DIFFERENT = [
    "ready: yes\n",
    "a: on\nb: Off\n",
    "yes: 1\n",  # a key
    "port: 010\n",
    "port: 0o17\n",
    "port: 1_000\n",
    "port: 1:20\n",
    "x: 1e5\n",
    "x: 1.5\n",
    "x: .inf\n",
    "day: 2026-01-01\n",
    "when: 2001-12-14 21:59:43.10 -5\n",
    "a: &x [1]\nb: *x\n",
    "a:\n  <<: {p: 1}\n  q: 2\n",
    "a: !!binary aGk=\n",
    "a: !!str 1\n",
    "%YAML 1.1\n---\na: 1\n",
    "a: 1\na: 2\n",
    "",
    "# only a comment\n",
    "a: 1\n---\n",
    "a: x\x85y\n",
    "x: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n",
    # a scalar inside MAX_DEPTH sequences: one node deeper than the reader allows
    "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH + "\n",
    # a byte order mark at a line's start: libyaml skips it, so a tag or alias follows it
    "a: 1\n---\n\ufeff!!binary aGk=\n",
    "\ufeff!foo bar\n",
    "a: &x [0, 1]\nb: [\n\ufeff*x,\n\ufeff*x]\n",
    "\ufeffa: 1\n",
    # a duplicate anchor: PyYAML refuses it, serde_yaml does not
    "a: &x 1\nb: &x 2\n",
    "- &a 1\n- &a 2\n",
    "x: =\n",
    # the same word quoted once and plain once
    'a: "yes"\nb: yes\n',
    'a: "2026-01-01"\nb: 2026-01-01\n',
    # folded: "2001-12-14 21:59:43" is a timestamp in PyYAML, a string in serde_yaml
    "a: '2001-12-14 21:59:43'\nb: 2001-12-14\n  21:59:43\n",
]


@pytest.mark.parametrize("text", DIFFERENT)
def test_a_text_read_otherwise_in_yaml_1_2_goes_to_pyyaml(text: str) -> None:
    assert fastyaml.documents(text, MAX_DEPTH) is None


@pytest.mark.parametrize(
    "text",
    [
        SLICE,
        SLICE + "---\n" + SLICE,
        "kind: List\nitems:\n- {a: 1}\n- {b: 'on'}\n",
        'a: "010"\nb: \'1:20\'\nc: "1e5"\nd: "~"\ne: ""\n',
        "a: |\n  yes\n  no\n",  # block scalars are strings in both
        "a: 0x1F\nb: -0x1F\nc: 0b11\nd: +5\ne: -0\nf: 18446744073709551615\n",
        "a: null\nb: Null\nc: NULL\nd:\ne: True\nf: FALSE\n",
        "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1) + "\n",
        "a: 'it''s'\nb: \"tab\\there\"\n",
    ],
)
def test_a_manifest_read_alike_takes_the_fast_path(text: str) -> None:
    assert agrees(text), "declined a text both read alike"


def test_many_quoted_suspects_cost_a_bounded_scan() -> None:
    """Every quoted timestamp of a long `kubectl get -o yaml` list is a suspect, each found
    by a scan of the text: past SCAN_BUDGET characters the text goes to PyYAML, never to a
    scan quadratic in its size."""
    items = "".join(
        f'- {{name: x{i}, created: "2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"}}\n'
        for i in range(4000)
    )
    started = time.process_time()
    assert fastyaml.documents(items, MAX_DEPTH) is None
    assert time.process_time() - started < 0.5
    few = "".join(f'- {{created: "2026-01-01T00:00:{i:02d}Z"}}\n' for i in range(20))
    assert agrees(few)


def test_every_manifest_in_the_repository_agrees() -> None:
    """The examples (what a folder source holds) all take the fast path; the CRDs and
    install manifests (aliases-like `*` in prose, `0440` modes) agree where they do."""
    examples = sorted(ROOT.glob("examples/**/*.yaml"))
    assert examples and all(agrees(p.read_text(encoding="utf-8")) for p in examples)
    for path in [*ROOT.glob("deploy/crds/*.yaml"), *ROOT.glob("deploy/manifests/*.yaml")]:
        agrees(path.read_text(encoding="utf-8"))


TOKENS = [
    "yes", "No", "ON", "off", "y", "n", "true", "False", "null", "~", "", "0", "010", "0o7",
    "0x1F", "0b11", "1_0", "1:20", "+1", "-0", "1e3", "1.0e+3", ".5", ".inf", ".NaN",
    "2026-01-01", "2026-01-01T10:00:00Z", "2026-1-1", "=", "<<", "web", "10.0.0.1",
    "a b", "80", "-1", "99999999999999999999",
]  # fmt: skip


def _scalar(r: random.Random) -> str:
    token = r.choice(TOKENS)
    style = r.random()
    if style < 0.4:
        return token or "''"
    if style < 0.7:
        return f'"{token}"'
    return f"'{token}'"


def _trap(r: random.Random) -> str:
    lines = []
    for i in range(r.randint(1, 6)):
        key = _scalar(r) if r.random() < 0.3 else f"k{i}"
        if r.random() < 0.3:
            value = "[" + ", ".join(_scalar(r) for _ in range(r.randint(0, 3))) + "]"
        else:
            value = _scalar(r)
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def test_random_scalars_and_the_fuzz_corpus_agree_with_pyyaml() -> None:
    r = random.Random(23)
    taken = 0
    for _ in range(3000):
        taken += agrees(_trap(r))
    for _ in range(1500):
        content, _n, _gen = yaml_gen.case(r)
        if isinstance(content, str):
            agrees(content)
    assert taken > 300  # the fast path ran on texts with no trap in them


def test_a_parse_workers_objects_arrive_equal() -> None:
    """What a parse worker pickles (the model objects' own __reduce__) unpickles equal."""
    for source in sorted(ROOT.glob("examples/**/*.yaml")):
        slots, _errors, _bad = load._parse(str(source))
        packed, _, _ = load._parse_packed(str(source))
        assert slots is not None and packed is not None
        got: dict[str, Any] = {}
        for chunk in packed:
            got.update(pickle.loads(chunk))
        assert got == slots, source
