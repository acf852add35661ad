"""metav1.Condition essence and the MCS ServiceExport condition vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ConditionType(StrEnum):
    VALID = "Valid"
    READY = "Ready"
    CONFLICT = "Conflict"


class Reason(StrEnum):
    # Valid
    VALID = "Valid"
    NO_SERVICE = "NoService"
    INVALID_SERVICE_TYPE = "InvalidServiceType"
    INVALID_CLUSTER_SELECTOR = "InvalidClusterSelector"  # KEP-5939
    INVALID_EXPORT_TO = "InvalidExportTo"  # clusterset.io/export-to (enhancements#6329)
    # Ready
    EXPORTED = "Exported"
    READY = "Ready"
    PENDING = "Pending"
    FAILED = "Failed"
    # Conflict
    PORT_CONFLICT = "PortConflict"
    TYPE_CONFLICT = "TypeConflict"
    SESSION_AFFINITY_CONFLICT = "SessionAffinityConflict"
    SESSION_AFFINITY_CONFIG_CONFLICT = "SessionAffinityConfigConflict"
    LABELS_CONFLICT = "LabelsConflict"
    ANNOTATIONS_CONFLICT = "AnnotationsConflict"
    INTERNAL_TRAFFIC_POLICY_CONFLICT = "InternalTrafficPolicyConflict"
    TRAFFIC_DISTRIBUTION_CONFLICT = "TrafficDistributionConflict"
    IP_FAMILY_CONFLICT = "IPFamilyConflict"
    CLUSTER_SELECTORS_CONFLICT = "ClusterSelectorsConflict"  # KEP-5939
    CLUSTER_SELECTORS_FALLBACK_POLICY_CONFLICT = "ClusterSelectorsFallbackPolicyConflict"
    EXPORT_TO_CONFLICT = "ExportToConflict"  # clusterset.io/export-to (enhancements#6329)
    NO_CONFLICTS = "NoConflicts"


class Status(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class Condition:
    type: ConditionType
    status: Status
    reason: str
    message: str = ""
