"""Identifiers: cluster IDs, namespaced service keys, DNS-label checks.

Cluster IDs must be one RFC-1123 DNS label here (not a dotted subdomain as
KEP-2149 allows), because `<hostname>.<clusterid>.<svc>.<ns>.svc.<zone>`
names would otherwise be ambiguous (see docs/dns-schema.md).
"""

from __future__ import annotations

import re
from typing import NamedTuple, NewType

ClusterId = NewType("ClusterId", str)

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class InvalidName(ValueError):
    """A name that cannot be used where it was given (field path in the message)."""


def is_dns_label(value: str) -> bool:
    """RFC 1123 label: lowercase alphanumerics and '-', 1-63 chars, no edge dashes."""
    return bool(_LABEL.match(value))


def cluster_id(value: str) -> ClusterId:
    """Validate and return a cluster ID (one RFC-1123 label)."""
    if not is_dns_label(value):
        raise InvalidName(f"cluster ID {value!r} is not an RFC-1123 DNS label")
    return ClusterId(value)


class ServiceKey(NamedTuple):
    """A service across the clusterset: namespace sameness makes (ns, name) global.

    A NamedTuple, not a dataclass: every pass hashes and compares keys hundreds of
    thousands of times, and a tuple does both in C (a dataclass's hash was the largest
    single cost of a 10-cluster reconcile, profiled).
    """

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"
