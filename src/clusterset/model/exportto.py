"""Export to a subset of clusters: the annotation `clusterset.io/export-to` on a ServiceExport.

kubernetes/enhancements#6329 (KEP-1645: "Allow exporting to any set of clusters and report it
in ServiceExport status") lets a service be exported to any set of clusters; until it merges
and its field exists, the set is this annotation: comma-separated cluster IDs. Unset: every
cluster of the clusterset, as KEP-1645 has always said.

Parsing returns a problem string naming the annotation and the bad item, never raises: a bad
value is a ServiceExport condition (Valid=False, InvalidExportTo), not a lost object.
"""

from __future__ import annotations

from typing import NamedTuple

from clusterset.model.ids import ClusterId, InvalidName, cluster_id
from clusterset.model.labels import PREFIX

ANNOTATION = PREFIX + "export-to"
FIELD = f"metadata.annotations[{ANNOTATION}]"


class Parsed(NamedTuple):
    clusters: frozenset[ClusterId] | None = None  # None: every cluster (unset, or a problem)
    problem: str = ""


def parse(value: str | None) -> Parsed:
    """The annotation's clusters: whitespace around items ignored; order and duplicates do
    not matter (it is a set). An empty value is refused rather than read as "nowhere": a
    service exported to no other cluster is simply not exported."""
    if value is None:
        return Parsed()
    if not value.strip():
        return Parsed(problem=f"{FIELD}: empty (unset it to export to every cluster)")
    clusters = set()
    for i, item in enumerate(value.split(",")):
        try:
            clusters.add(cluster_id(item.strip()))
        except InvalidName as exc:
            return Parsed(problem=f"{FIELD}: item {i}: {_short(str(exc))}")
    return Parsed(frozenset(clusters))


def _short(s: str, limit: int = 120) -> str:
    return s if len(s) <= limit else s[:limit] + "..."


def text(clusters: frozenset[ClusterId] | None) -> str:
    """The set as the annotation spells it (sorted), for condition messages."""
    return "(unset)" if clusters is None else ",".join(sorted(clusters))
