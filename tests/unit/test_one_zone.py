"""One zone builder ships: src answers from zone.build's wire bytes and never builds records
with dnspython's record classes (those belong to the reference model, tests/zone_records.py).
Import-linter keeps `tests` out of src but cannot name subpackages of dnspython; this does."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "clusterset"
# Record objects and zones: what a second zone builder would need. Decoding wire data
# (dns.rdata.from_wire, dns.wire) and messages for the forwarder and clients stay allowed.
BUILDERS = ("dns.rdtypes", "dns.rrset", "dns.zone", "dns.versioned", "dns.node", "dns.zonefile")


def imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def builders_in(path: Path) -> list[str]:
    return sorted(
        m for m in imported_modules(path) if any(m == b or m.startswith(b + ".") for b in BUILDERS)
    )


def test_src_never_imports_dnspython_record_builders() -> None:
    found = {str(p.relative_to(SRC)): builders_in(p) for p in SRC.rglob("*.py")}
    assert {f: m for f, m in found.items() if m} == {}


def test_the_check_sees_the_oracle_imports() -> None:
    # The oracle itself is what the check must catch, in every spelling it uses.
    oracle = Path(__file__).resolve().parents[1] / "zone_records.py"
    assert "dns.rdtypes.IN.A" in builders_in(oracle)


def test_the_check_sees_from_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from dns import rrset\nfrom dns.zone import Zone\nimport dns.message\n")
    assert builders_in(probe) == ["dns.rrset", "dns.zone", "dns.zone.Zone"]
