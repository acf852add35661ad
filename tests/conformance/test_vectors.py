"""DNS conformance vectors: CoreDNS multicluster tests and the mcs-api conformance suite.

Each case of `vectors/*.yaml` is one query against the pure answer path:

    fixture (Kubernetes YAML)  -> Objects -> ImportedView
    -> zone.build.build(view, ZoneSettings(zone=...), serial=...)
    -> zone.wire.CompiledZone -> zone.wire.respond(..., tcp=True)

and the reply is compared with the case's `expect`: the rcode, and each of the
answer / authority (`ns`) / additional (`extra`) sections as a multiset of RR
text lines `owner TTL class type rdata`. Names are compared case-insensitively
unless the case sets `case_sensitive: true`. See README.md for the format, the
sources and the deliberate differences from CoreDNS (`decision:`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
import yaml

from clusterset.model.bag import Objects, add_object, group_slices, implied_namespaces
from clusterset.model.ids import ServiceKey
from clusterset.model.state import ImportedView
from clusterset.zone.build import build
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import CompiledZone, respond

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
VECTORS = HERE / "vectors"

# The SOA serial every CoreDNS test expectation is written with.
DEFAULT_SERIAL = 1499347823

CASE_KEYS = {
    "id",
    "source",
    "fixture",
    "zone",
    "query",
    "expect",
    "decision",
    "xfail_reason",
    "case_sensitive",
    "settings",
    "serial",
    "zone_loaded",
    "note",
}
EXPECT_KEYS = {"rcode", "answer", "ns", "extra"}
SETTINGS_KEYS = {"ttl", "version", "version_ttl", "ns_addresses"}


# --- fixtures -> ImportedView -------------------------------------------------------------


@cache
def load_view(fixture: str) -> ImportedView:
    """The imported view of `fixtures/<fixture>.yaml`, as FolderFeed.snapshot builds it.

    Namespace existence decides NXDOMAIN vs NODATA, so when the fixture declares
    Namespace objects those (and only those) are the namespaces of the view, like
    CoreDNS's GetNamespaceByName mock / `namespaces` option. Without any, the
    feed's own rule applies (every namespace an object sits in).
    """
    objs = Objects()
    text = (FIXTURES / f"{fixture}.yaml").read_text(encoding="utf-8")
    for doc in yaml.safe_load_all(text):
        if doc is not None:
            add_object(objs, doc)
    namespaces = frozenset(objs.namespaces) if objs.namespaces else implied_namespaces(objs)
    return ImportedView(
        cluster=None,
        imports=dict(objs.imports),
        slices=group_slices(objs.mcs_slices),
        namespaces=namespaces,
        local_services=dict(objs.services),
    )


@cache
def compiled(
    fixture: str, zone: str, serial: int, settings: tuple[tuple[str, Any], ...]
) -> CompiledZone:
    state = build(load_view(fixture), ZoneSettings(zone=zone, **dict(settings)), serial=serial)
    return CompiledZone(state)


# --- RR text ------------------------------------------------------------------------------


def _line(name: dns.name.Name, ttl: int, rdata: dns.rdata.Rdata, *, case_sensitive: bool) -> str:
    text = (
        f"{name.to_text()} {ttl} {dns.rdataclass.to_text(rdata.rdclass)} "
        f"{dns.rdatatype.to_text(rdata.rdtype)} {rdata.to_text()}"
    )
    if case_sensitive:
        return text
    if rdata.rdtype == dns.rdatatype.TXT:  # only names are case-insensitive, not TXT data
        head, _, data = text.partition(" TXT ")
        return f"{head.lower()} TXT {data}"
    return text.lower()


def expected_line(text: str, *, case_sensitive: bool) -> str:
    """Normalise `owner TTL class type rdata` (CoreDNS test.A(...) style, any spacing)."""
    parts = text.split(None, 4)
    if len(parts) != 5:
        raise ValueError(f"expected 'owner TTL class type rdata', got {text!r}")
    owner, ttl, rdclass, rdtype, rdata_text = parts
    rdata = dns.rdata.from_text(rdclass, rdtype, rdata_text, origin=dns.name.root, relativize=False)
    return _line(dns.name.from_text(owner), int(ttl), rdata, case_sensitive=case_sensitive)


def section_lines(section: list[Any], *, case_sensitive: bool) -> list[str]:
    return sorted(
        _line(rrset.name, rrset.ttl, rd, case_sensitive=case_sensitive)
        for rrset in section
        for rd in rrset
    )


# --- vectors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vector:
    file: str
    case: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}:{self.case['id']}"


def _check_case(file: str, case: dict[str, Any]) -> None:
    where = f"{file}:{case.get('id', '?')}"
    unknown = set(case) - CASE_KEYS
    assert not unknown, f"{where}: unknown keys {sorted(unknown)}"
    for key in ("id", "source", "fixture", "zone", "query", "expect"):
        assert key in case, f"{where}: missing {key}"
    assert set(case["query"]) == {"name", "type"}, f"{where}: query needs name and type"
    unknown = set(case["expect"]) - EXPECT_KEYS
    assert not unknown, f"{where}: unknown expect keys {sorted(unknown)}"
    assert "rcode" in case["expect"], f"{where}: expect.rcode is required"
    unknown = set(case.get("settings") or {}) - SETTINGS_KEYS
    assert not unknown, f"{where}: unknown settings {sorted(unknown)}"
    assert (FIXTURES / f"{case['fixture']}.yaml").is_file(), f"{where}: no fixture"


def load_vectors() -> list[Vector]:
    out: list[Vector] = []
    for path in sorted(VECTORS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        seen: set[str] = set()
        for case in doc["cases"]:
            _check_case(path.stem, case)
            assert case["id"] not in seen, f"{path.stem}: duplicate id {case['id']}"
            seen.add(case["id"])
            out.append(Vector(path.stem, case))
    return out


VECTOR_LIST = load_vectors()


def _param(v: Vector) -> Any:
    reason = v.case.get("xfail_reason")
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(v, id=v.id, marks=marks)


def ask(v: Vector) -> dns.message.Message:
    case = v.case
    serial = int(case.get("serial", DEFAULT_SERIAL))
    settings = tuple(
        sorted(
            (k, tuple(v) if isinstance(v, list) else v)
            for k, v in (case.get("settings") or {}).items()
        )
    )
    zone = compiled(case["fixture"], case["zone"], serial, settings)
    # The CoreDNS tests send a plain query (no EDNS0); TCP so that size never truncates.
    query = dns.message.make_query(case["query"]["name"], case["query"]["type"])
    if case.get("zone_loaded", True):
        reply = respond(zone, zone.origin_wire, query.to_wire(), tcp=True)
    else:  # the server before its first load (CoreDNS: informers not synced)
        unsynced = CompiledZone(zone.state, synced=False)
        reply = respond(unsynced, zone.origin_wire, query.to_wire(), tcp=True)
    assert reply is not None, "no reply"
    msg = dns.message.from_wire(reply)
    assert msg.id == query.id
    return msg


@pytest.mark.conformance
@pytest.mark.parametrize("vector", [_param(v) for v in VECTOR_LIST])
def test_vector(vector: Vector) -> None:
    case = vector.case
    cs = bool(case.get("case_sensitive", False))
    expect = case["expect"]
    msg = ask(vector)
    got = {
        "rcode": dns.rcode.to_text(msg.rcode()),
        "answer": section_lines(msg.answer, case_sensitive=cs),
        "ns": section_lines(msg.authority, case_sensitive=cs),
        "extra": section_lines(msg.additional, case_sensitive=cs),
    }
    want = {
        "rcode": expect["rcode"],
        **{
            sec: sorted(expected_line(t, case_sensitive=cs) for t in expect.get(sec) or [])
            for sec in ("answer", "ns", "extra")
        },
    }
    if got != want:
        pytest.fail(_diff(vector, got, want), pytrace=False)


def _diff(vector: Vector, got: dict[str, Any], want: dict[str, Any]) -> str:
    """A readable failure: per section, the RRs missing from the reply and the unexpected ones."""
    q = vector.case["query"]
    lines = [f"{vector.id}: {q['name']} {q['type']}"]
    if got["rcode"] != want["rcode"]:
        lines.append(f"  rcode: expected {want['rcode']}, got {got['rcode']}")
    for sec in ("answer", "ns", "extra"):
        missing = _minus(want[sec], got[sec])
        extra = _minus(got[sec], want[sec])
        lines += [f"  {sec}: missing   {rr}" for rr in missing]
        lines += [f"  {sec}: unexpected {rr}" for rr in extra]
    return "\n".join(lines)


def _minus(a: list[str], b: list[str]) -> list[str]:
    rest = list(b)
    out = []
    for x in a:
        if x in rest:
            rest.remove(x)
        else:
            out.append(x)
    return out


@pytest.mark.conformance
def test_vectors_cite_sources() -> None:
    """Every vector names where its expectation comes from; decisions say what CoreDNS does."""
    assert VECTOR_LIST
    for v in VECTOR_LIST:
        assert str(v.case["source"]).strip(), v.id
        if "decision" in v.case:
            assert "CoreDNS" in v.case["decision"] or "coredns" in v.case["decision"], v.id


@pytest.mark.conformance
def test_fixture_without_namespace_objects_gets_the_feeds_namespaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every shipped fixture declares its Namespaces; this covers the other branch."""
    (tmp_path / "bare.yaml").write_text(
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceImport\n"
        "metadata: {name: web, namespace: team-a}\n"
        "spec: {type: ClusterSetIP, ips: [10.0.0.7], ports: [{port: 80, protocol: TCP}]}\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "FIXTURES", tmp_path)
    view = load_view.__wrapped__("bare")
    assert "team-a" in view.namespaces
    assert ServiceKey("team-a", "web") in view.imports
