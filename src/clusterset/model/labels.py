"""Names clusterset reads and writes on objects: labels, annotations and the region
ClusterProperty; ours, Kubernetes', Karmada's.

Objects are told apart by their labels, never by name prefixes; the one exception is Karmada's
own pairing of a ServiceImport `<svc>` with its derived Service `derived-<svc>`, which Karmada
makes by name (pkg/util/names.GenerateDerivedServiceName) and marks only with its managed label.
"""

from __future__ import annotations

from collections.abc import Mapping

# Our annotations (policies, carried from the oldest export to the ServiceImport) and labels.
PREFIX = "clusterset.io/"
# Every object clusterset writes carries this; prune deletes only such objects.
LABEL_OWNED = PREFIX + "managed"
# ClusterProperty naming a member's region (tiers).
REGION_PROPERTY = "region.clusterset.io"

# Managers (endpointslice.kubernetes.io/managed-by) of a cluster's own Services' slices: the
# endpointslice controller, the mirroring controller (selector-less Services with Endpoints),
# and none (hand-made, as in manifest folders). Any other manager's slice (Karmada's
# MultiClusterService dispatch, its `imported-*` copies, ours) holds another cluster's.
LOCAL_SLICE_MANAGERS = frozenset(
    {"", "endpointslice-controller.k8s.io", "endpointslicemirroring-controller.k8s.io"}
)

KARMADA_MANAGED = "karmada.io/managed"
KARMADA_WORK_ANNOTATIONS = ("work.karmada.io/name", "work.karmada.io/namespace")
KARMADA_DERIVED_PREFIX = "derived-"


def karmada_managed(meta: Mapping[str, object]) -> bool:
    """Karmada applied this object from a Work (its label, or its Work annotations)."""
    labels = meta.get("labels")
    annotations = meta.get("annotations")
    if isinstance(labels, Mapping) and labels.get(KARMADA_MANAGED) == "true":
        return True
    return isinstance(annotations, Mapping) and any(
        a in annotations for a in KARMADA_WORK_ANNOTATIONS
    )


def karmada_derived_of(name: str) -> str | None:
    """The ServiceImport a Karmada derived Service `derived-<svc>` belongs to, by Karmada's rule."""
    if name.startswith(KARMADA_DERIVED_PREFIX) and len(name) > len(KARMADA_DERIVED_PREFIX):
        return name[len(KARMADA_DERIVED_PREFIX) :]
    return None
