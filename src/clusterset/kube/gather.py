"""`clusterset gather`: what support needs from each cluster, as `subctl gather` and
`cilium sysdump` collect it: clusterset's objects, the MCS objects, the liveness Leases, the
CoreDNS configuration, and the clusterset pods' recent logs and /metrics.

Secrets are never read. Everything written goes through `redact`: bearer tokens, JWTs,
`token:`/`password:` values and kubeconfig credentials are replaced, and managedFields and
last-applied annotations are dropped (they can carry what was applied)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from clusterset.kube import api as k
from clusterset.model import convert, labels, liveness

REDACTED = "<redacted>"
_KEYS = (
    r"token|password|passwd|secret|api[_-]?key|client-key-data|client-certificate-data|"
    r"credentials?|authorization"
)
# What a credential looks like, in YAML, JSON (also escaped inside a log line), logfmt,
# flags, URLs and PEM; each value is consumed whole (quoted values with their spaces).
_SECRETS = [
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        REDACTED,
    ),
    (re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}"), REDACTED),  # a JWT: every SA token
    (re.compile(r"(?i)\b(bearer|basic)[ \t]+[^\s\"',\\]+"), rf"\1 {REDACTED}"),
    (re.compile(r"(\b[a-z][\w+.-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}@"),  # user:pw@
    (re.compile(rf"(?i)(--(?:{_KEYS})[ =])[^\s]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)(\b(?:set-)?cookie:[ \t]*)[^\n]+"), rf"\1{REDACTED}"),
    (
        # `key: value`, `"key": "value"`, `key=value`, `\"key\":\"value\"`: not when the
        # key ends a longer word (serviceAccountToken) or the value is on the next line.
        re.compile(
            rf"""(?i)((?<![\w-])\\?["']?(?:{_KEYS})\\?["']?[ \t]*[:=][ \t]*)"""
            r"""(\\?"(?:[^"\\\n]|\\[^"])*\\?"|'[^'\n]*'|[^\s,{}\["'\\][^\s,}"'\\]*)"""
        ),
        rf"\1{REDACTED}",
    ),
]
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def redact(text: str) -> str:
    """`text` with credentials replaced (pure, tested by table)."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def _clean(obj: k.Obj) -> k.Obj:
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    notes = {a: v for a, v in (meta.get("annotations") or {}).items()
             if a not in _DROPPED_ANNOTATIONS}  # fmt: skip
    if "annotations" in meta:
        meta["annotations"] = notes
    return {**obj, "metadata": meta}


@dataclass
class Bundle:
    """Files by path in the archive, and one line per item that could not be collected."""

    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, path: str, text: str) -> None:
        self.files[path] = redact(text).encode()


# What is listed in every cluster: (file, resource, label selector, namespace or None).
def _lists(namespace: str, lease_namespace: str) -> list[tuple[str, k.Resource, str, str | None]]:
    return [
        ("serviceexports", k.SERVICE_EXPORTS, "", None),
        ("serviceimports", k.SERVICE_IMPORTS, "", None),
        ("endpointslices-mcs", k.ENDPOINT_SLICES, convert.LABEL_SERVICE_NAME, None),
        ("services-clusterset", k.SERVICES, f"{labels.LABEL_OWNED}=true", None),
        ("clusterproperties", k.CLUSTER_PROPERTIES, "", None),
        ("leases-source", k.LEASES, liveness.SOURCE_LABEL, lease_namespace),
        ("leases-clusterset", k.LEASES, "", namespace),
        ("pods-clusterset", k.PODS, "", namespace),
    ]


async def collect(
    api: k.KubeApi,
    *,
    namespace: str = "clusterset",
    lease_namespace: str = liveness.NAMESPACE,
    log_lines: int = 2000,
) -> Bundle:
    """Everything about one cluster; what cannot be read is a problem line, not a failure."""
    out = Bundle()
    base = api.name

    async def listed(name: str, res: k.Resource, selector: str, ns: str | None) -> None:
        if res.group == k.MCS_GROUP:  # v1beta1, else Karmada's v1alpha1
            for v in k.MCS_VERSIONS:
                try:
                    items, _ = await api.list(
                        k.Resource(res.group, v, res.plural, res.kind).path(ns),
                        label_selector=selector,
                    )
                except k.API_ERRORS as exc:
                    if isinstance(exc, k.ApiError) and exc.status == 404:
                        continue
                    out.problems.append(f"{base}: {name}: {exc}")
                    return
                out.add(f"{base}/{name}.yaml", _dump(items))
                return
            out.problems.append(f"{base}: {name}: {k.MCS_GROUP} is not served")
            return
        try:
            items, _ = await api.list(res.path(ns), label_selector=selector)
        except k.API_ERRORS as exc:
            out.problems.append(f"{base}: {name}: {exc}")
            return
        out.add(f"{base}/{name}.yaml", _dump(items))
        if name == "pods-clusterset":
            await asyncio.gather(*(_pod(api, out, pod, namespace, log_lines) for pod in items))

    await asyncio.gather(*(listed(*spec) for spec in _lists(namespace, lease_namespace)))
    for cm in ("coredns", "node-local-dns"):
        try:
            obj = await api.get(k.CONFIGMAPS.path("kube-system", cm))
        except k.API_ERRORS as exc:
            if not (isinstance(exc, k.ApiError) and exc.status == 404):
                out.problems.append(f"{base}: ConfigMap kube-system/{cm}: {exc}")
            continue
        out.add(f"{base}/configmap-{cm}.yaml", _dump([obj]))
    return out


async def _pod(api: k.KubeApi, out: Bundle, pod: k.Obj, namespace: str, lines: int) -> None:
    """A clusterset pod's containers' recent logs and the /metrics of its `metrics` ports."""
    name = (pod.get("metadata") or {}).get("name", "")
    base = f"{api.name}/pods/{name}"
    for c in (pod.get("spec") or {}).get("containers") or []:
        cname = c.get("name", "")
        try:
            text = await api.get_text(
                f"{k.PODS.path(namespace, name)}/log",
                {"container": cname, "tailLines": str(lines)},
            )
            out.add(f"{base}/{cname}.log", text)
        except k.API_ERRORS as exc:
            out.problems.append(f"{base}: log of {cname}: {exc}")
        for port in c.get("ports") or []:
            if port.get("name") != "metrics":
                continue
            target = f"{name}:{port.get('containerPort')}"
            proxy = f"{k.PODS.path(namespace, target)}/proxy/metrics"
            try:
                out.add(f"{base}/{cname}.metrics", await api.get_text(proxy))
            except k.API_ERRORS as exc:
                out.problems.append(f"{base}: /metrics of {cname}: {exc}")


def _dump(items: list[k.Obj]) -> str:
    return yaml.safe_dump_all([_clean(i) for i in items], sort_keys=False)


def summary(bundles: Mapping[str, Bundle], unreachable: Mapping[str, str]) -> str:
    """The bundle's index: what each cluster gave, and what could not be collected."""
    return json.dumps(
        {
            "clusters": {
                name: {"files": sorted(b.files), "problems": b.problems}
                for name, b in sorted(bundles.items())
            },
            "unreachable": dict(unreachable),
            "redaction": "Secrets are never read; tokens, JWTs, passwords and kubeconfig "
            "credentials are replaced by " + REDACTED,
        },
        indent=2,
    )
