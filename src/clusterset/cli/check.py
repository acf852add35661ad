"""`clusterset check`: what exporting a service would change, before anyone exports it.

The edge of `reconcile.preflight`: the command's flags, then it reads the proposed
ServiceExport (a file, or `--service NS/NAME`), observes the clusterset (a manifests root or
real clusters, read-only), and prints the Finding. Exit 0: no conflict; 1: it would conflict (or
the export would be invalid); 2: bad input (raised as SourceError, one line).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from clusterset.cli.common import (
    DEFAULT_CIDR,
    DEFAULT_CIDR_V6,
    AllContextsOpt,
    CidrOpt,
    CidrV6Opt,
    ContextOpt,
    KarmadaOpt,
    KubeconfigOpt,
    ManifestsOpt,
    StateFileOpt,
    UsageProblem,
    app,
    cluster_arg,
    default_kubeconfig,
    manifest_feed,
    member_apis,
    service_arg,
)
from clusterset.controller.manifest import ClusterSetFeed
from clusterset.controller.observer import SYNC_WITHIN, observing
from clusterset.kube.api import API_ERRORS, KubeApi, load_contexts
from clusterset.kube.karmada import PlacementInputs, control_api, placement_inputs
from clusterset.manifests.load import SourceError
from clusterset.model import convert
from clusterset.model.bag import Objects, add_object
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import Service, ServiceExport
from clusterset.model.state import ClusterSetState
from clusterset.reconcile import desired as rd
from clusterset.reconcile import placement, preflight
from clusterset.zone import lookup

IPs = Mapping[tuple[ClusterId, ServiceKey], tuple[str, ...]]
Obj = dict[str, Any]
POLICY_GROUP = "policy.karmada.io"


def _documents(path: Path) -> list[Any]:
    try:
        return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: unreadable: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SourceError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from exc


def read_proposal(path: Path) -> tuple[ServiceExport, Service | None, bool]:
    """(export, its Service if the file has it, whether the export carries a timestamp)."""
    docs = _documents(path)
    objs = Objects()
    stamped = False
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or convert.kind_of(doc)[1] not in ("Service", "ServiceExport"):
            continue  # a bundle also holds Deployments, policies...: only these two matter
        try:
            add_object(objs, doc)
        except convert.ObjectError as exc:
            raise SourceError(f"{path}: document {i}: {exc}") from exc
        if convert.kind_of(doc)[1] == "ServiceExport":
            stamped = bool((doc.get("metadata") or {}).get("creationTimestamp"))
    if len(objs.exports) != 1:
        raise SourceError(f"{path}: expected exactly one ServiceExport, found {len(objs.exports)}")
    export = next(iter(objs.exports.values()))
    return export, objs.services.get(export.key), stamped


def observe_manifests(feed: ClusterSetFeed) -> tuple[ClusterSetState, IPs]:
    observed = feed.observe()
    ips = {
        (cid, key): imp.ips
        for cid, cd in observed.desired.clusters.items()
        for key, imp in cd.imports.items()
    }
    return observed.state, ips


async def observe_clusters(
    apis: dict[str, KubeApi], *, within: float = SYNC_WITHIN
) -> tuple[ClusterSetState, IPs, dict[str, ClusterId]]:
    """One read-only look at every member: state, today's ClusterSetIPs, context -> ID."""
    async with observing(apis, within=within) as observer:
        state = observer.observe()
        ips = observer.clusterset_ips(state, rd.aggregate_all(state))
        return state, ips, dict(observer.ids)


def run(
    state: ClusterSetState,
    ips: IPs,
    *,
    cluster: ClusterId,
    file: Path | None,
    service: str | None,
    output: str,
    now: float | None = None,
) -> int:
    """Print the finding of one proposal; return the exit code (0 or 1)."""
    finding = finding_of(state, ips, cluster=cluster, file=file, service=service, now=now)
    emit(finding, output)
    return 1 if finding.fails else 0


def finding_of(
    state: ClusterSetState,
    ips: IPs,
    *,
    cluster: ClusterId,
    file: Path | None,
    service: str | None,
    now: float | None = None,
) -> preflight.Finding:
    """The finding of one proposal in `cluster`."""
    if cluster not in state.clusters:
        raise SourceError(f"--cluster {cluster}: not one of {', '.join(sorted(state.clusters))}")
    observed = state.clusters[cluster]
    when = time.time() if now is None else now
    proposed_service: Service | None = None
    if file is not None:
        export, proposed_service, stamped = read_proposal(file)
        if not stamped:
            # Not created yet: it will be the youngest export (keep the time of an existing one).
            old = observed.exports.get(export.key)
            export = dataclasses.replace(export, created=old.created if old is not None else when)
    elif service is not None:
        key = service_arg(service, "--service")
        existing = observed.exports.get(key)
        export = existing if existing is not None else ServiceExport(key.namespace, key.name, when)
    else:
        raise SourceError("give a ServiceExport FILE or --service NAMESPACE/NAME")
    return preflight.check(
        state,
        cluster=cluster,
        key=export.key,
        export=export,
        service=proposed_service,
        ips=ips,
        answer=lookup.service_answer,
    )


def karmada_proposal(path: Path | None, key: ServiceKey) -> tuple[Obj | None, list[Obj]]:
    """From FILE: the ServiceExport document and the Karmada policies beside it (a policy
    in the file counts as applied: it replaces the one of its name in the karmada-apiserver)."""
    if path is None:
        return None, []
    export: Obj | None = None
    policies: list[Obj] = []
    for doc in _documents(path):
        if not isinstance(doc, dict):
            continue
        group, kind = convert.kind_of(doc)
        if kind == "ServiceExport":
            export = doc
        elif kind in ("PropagationPolicy", "ClusterPropagationPolicy") and group == POLICY_GROUP:
            meta = doc.get("metadata") or {}
            if kind == "PropagationPolicy" and not meta.get("namespace"):
                doc = {**doc, "metadata": {**meta, "namespace": key.namespace}}
            policies.append(doc)
    return export, policies


def karmada_placement(
    inputs: PlacementInputs, key: ServiceKey, export_doc: Obj | None, file_policies: list[Obj]
) -> placement.Placement:
    """Where Karmada would place the export: as the webhook in the karmada-apiserver says."""
    template = (
        export_doc
        or inputs.template
        or {
            "apiVersion": f"{convert.MCS_GROUP}/v1alpha1",  # Karmada's own CRD
            "kind": "ServiceExport",
        }
    )
    meta = dict(template.get("metadata") or {})
    if export_doc is not None and inputs.template is not None:
        # The live template's claim (which policy Karmada bound it to) holds for the file's.
        live = inputs.template.get("metadata") or {}
        for field, keys in (("annotations", placement.CLAIMS), ("labels", placement.CLAIM_LABELS)):
            kept = {k: v for k, v in (live.get(field) or {}).items() if k in keys}
            if kept:
                meta[field] = {**(meta.get(field) or {}), **kept}
    template = {
        **template,
        "metadata": {**meta, "namespace": key.namespace, "name": key.name},
    }

    def ident(policy: Obj) -> tuple[object, object]:
        meta = policy.get("metadata") or {}
        return meta.get("namespace"), meta.get("name")

    def replaced(served: list[Obj], kind: str) -> list[Obj]:
        mine = [p for p in file_policies if p.get("kind") == kind]
        names = {ident(p) for p in mine}
        return [p for p in served if ident(p) not in names] + mine

    policies = replaced(inputs.policies, "PropagationPolicy")
    cluster_policies = replaced(inputs.cluster_policies, "ClusterPropagationPolicy")
    unscheduled = placement.placement(
        template,
        binding=None,
        policies=policies,
        cluster_policies=cluster_policies,
        clusters=inputs.clusters,
    )
    # Karmada's binding stands unless the policy that decides is one in the file (a changed
    # placement of the bound policy is scheduled again; another policy does not move it).
    decided_by_file = any(
        unscheduled.policy == f"{p.get('kind', '')} {ident(p)[1]}"
        and ident(p)[0] in (None, key.namespace)
        for p in file_policies
    )
    if decided_by_file or inputs.binding is None:
        return unscheduled
    return placement.placement(
        template,
        binding=inputs.binding,
        policies=policies,
        cluster_policies=cluster_policies,
        clusters=inputs.clusters,
    )


def _summary(s: preflight.ImportSummary | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "type": s.type,
        "ports": list(s.ports),
        "ipFamilies": list(s.ip_families),
        "sessionAffinity": s.session_affinity,
        "clusters": list(s.clusters),
    }


def data(finding: preflight.Finding) -> dict[str, Any]:
    return {
        "service": str(finding.key),
        "cluster": finding.cluster,
        "before": _summary(finding.before),
        "after": _summary(finding.after),
        "winner": finding.winner,
        "invalid": finding.invalid or None,
        "conflicts": [
            {
                "cluster": c.cluster,
                "reasons": list(c.reasons),
                "message": c.message,
                "winner": c.winner,
            }
            for c in finding.conflicts
        ],
        "droppedPorts": list(finding.dropped_ports),
        "answers": [
            {
                "consumer": a.consumer,
                "changed": a.changed,
                "before": list(a.before),
                "after": list(a.after),
            }
            for a in finding.answers
        ],
        "conflicting": bool(finding.conflicts),
        "exitCode": 1 if finding.fails else 0,  # 1: a conflict, or the export invalid
    }


def _cell(s: preflight.ImportSummary | None, field: str) -> str:
    if s is None:
        return "(no ServiceImport)" if field == "type" else "-"
    value = getattr(s, field)
    return ",".join(value) if isinstance(value, tuple) else str(value)


def emit(finding: preflight.Finding, output: str) -> None:
    if output == "json":
        print(json.dumps(data(finding), indent=2))
        return
    if output == "yaml":
        print(yaml.safe_dump(data(finding), sort_keys=False), end="")
        return
    f = finding
    print(f"Exporting {f.key} from {f.cluster}")
    print()
    print(f"  {'ServiceImport ' + str(f.key):<32}{'before':<28}after")
    for label, field in (
        ("type", "type"),
        ("ports", "ports"),
        ("ipFamilies", "ip_families"),
        ("sessionAffinity", "session_affinity"),
        ("clusters", "clusters"),
    ):
        old, new = _cell(f.before, field), _cell(f.after, field)
        mark = "" if old == new else "   (changes)"
        print(f"  {label:<32}{old:<28}{new}{mark}")
    print()
    if f.dropped_ports:
        print(
            f"Ports of {f.cluster}'s Service left out of the merged ServiceImport: "
            f"{', '.join(f.dropped_ports)}"
        )
    if f.invalid:
        reason, _, why = f.invalid.partition(": ")
        print(f"Invalid: the export in {f.cluster} would be Valid=False {reason}: {why}")
    if f.conflicts:
        print(f"Conflict (KEP-1645: the oldest export wins, here {f.winner}'s):")
        for c in f.conflicts:
            print(f"  {c.cluster}: Conflict=True {','.join(c.reasons)}: {c.message}")
    elif not f.invalid:
        print("No conflict.")
    print()
    print(f"DNS answer of {f.key.name}.{f.key.namespace}.svc.clusterset.local:")
    for a in f.answers:
        if a.changed:
            print(f"  {a.consumer}: changes")
            print(f"    before: {'; '.join(a.before)}")
            print(f"    after:  {'; '.join(a.after)}")
        else:
            print(f"  {a.consumer}: unchanged ({'; '.join(a.after)})")
    print()
    if f.invalid:
        print("result: would be invalid" + (" and conflict" if f.conflicts else "") + " (exit 1)")
    else:
        print("result: would conflict (exit 1)" if f.conflicts else "result: ok (exit 0)")


@app.command()
def check(
    file: Annotated[
        Path | None,
        typer.Argument(help="YAML with the ServiceExport (and optionally its Service)."),
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="NAMESPACE/NAME to export (instead of FILE).")
    ] = None,
    cluster: Annotated[
        str,
        typer.Option(
            help="The cluster that would export it (with --karmada-kubeconfig, default: each "
            "member Karmada places the export in)."
        ),
    ] = "",
    manifests: ManifestsOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
    output_format: Annotated[str, typer.Option("-o", "--output", help="text|json|yaml")] = "text",
    state_file: StateFileOpt = None,
    clusterset_cidr: CidrOpt = DEFAULT_CIDR,
    clusterset_cidr_v6: CidrV6Opt = DEFAULT_CIDR_V6,
) -> None:
    """Pre-flight: what exporting a service would change (merged ServiceImport before/after,
    who reports Conflict and which export wins, each consumer's DNS answer). Exit 0: no
    conflict; 1: it would conflict, or the export would be invalid; 2: bad input.

    \b
    Examples:
      clusterset check --manifests examples/clusters --cluster member2 --service default/web
      clusterset check export.yaml --kubeconfig K --all-contexts --cluster member2 -o json
      clusterset check export-and-policy.yaml --karmada-kubeconfig KARMADA
    """
    if output_format not in ("text", "json", "yaml"):
        raise UsageProblem(f"-o {output_format!r}: expected text, json or yaml")
    if not cluster and karmada_kubeconfig is None:
        raise UsageProblem("--cluster NAME is required (without --karmada-kubeconfig)")
    if (file is None) == (service is None):
        raise UsageProblem("give either a ServiceExport FILE or --service NAMESPACE/NAME")
    if not cluster:
        assert karmada_kubeconfig is not None
        if manifests is not None or kubeconfig is not None:
            raise UsageProblem("--karmada-kubeconfig and --manifests/--kubeconfig are exclusive")
        code = _placed(file, service, karmada_kubeconfig, context, output_format)
        raise SystemExit(code)
    kubeconfig = kubeconfig or default_kubeconfig(manifests, karmada_kubeconfig)
    if kubeconfig is not None or karmada_kubeconfig is not None:
        if manifests is not None:
            raise UsageProblem("--manifests and --kubeconfig are exclusive")
        apis = member_apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
        state, ips, ids = asyncio.run(observe_clusters(apis))
        cid = ids.get(cluster, ClusterId(cluster))
    else:
        feed = manifest_feed(manifests, state_file, clusterset_cidr, clusterset_cidr_v6)
        state, ips = observe_manifests(feed)
        cid = cluster_arg(cluster)
    code = run(state, ips, cluster=cid, file=file, service=service, output=output_format)
    raise SystemExit(code)


def _placed(
    file: Path | None,
    service: str | None,
    karmada_kubeconfig: Path,
    contexts: list[str] | None,
    output: str,
) -> int:
    """`check --karmada-kubeconfig` without --cluster: in each member Karmada places the
    export in (its ResourceBinding, else its policy; a policy in FILE counts as applied)."""
    key = (
        read_proposal(file)[0].key if file is not None else service_arg(service or "", "--service")
    )
    export_doc, policies = karmada_proposal(file, key)
    config = next(
        iter(load_contexts(karmada_kubeconfig, None, flag="--karmada-kubeconfig").values())
    )

    async def look() -> PlacementInputs:
        api = control_api(config)
        try:
            return await placement_inputs(api, key.namespace, key.name)
        except API_ERRORS as exc:
            raise SourceError(
                f"--karmada-kubeconfig: cannot read Karmada's policies for {key}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            await api.close()

    where = karmada_placement(asyncio.run(look()), key, export_doc, policies)
    if where.unsure:
        raise SourceError(
            f"ServiceExport {key}: where Karmada places it is not known before it schedules "
            f"({where.policy}: {where.unsure}); give --cluster NAME to check one member"
        )
    if not where.policy:
        raise SourceError(
            f"ServiceExport {key}: no PropagationPolicy or ClusterPropagationPolicy selects it, "
            "so Karmada does not propagate it (put the policy in FILE, or give --cluster NAME)"
        )
    if not where.members:
        raise SourceError(f"ServiceExport {key}: {where.policy} places it in no cluster")
    apis = member_apis(None, contexts, False, karmada_kubeconfig)
    state, ips, ids = asyncio.run(observe_clusters(apis))
    unknown = [m for m in where.members if ids.get(m) not in state.clusters]
    if unknown:
        raise SourceError(
            f"ServiceExport {key}: {where.policy} places it in {', '.join(unknown)}, which "
            "Karmada's cluster proxy did not let this command read (or --context left out)"
        )
    findings = [
        finding_of(state, ips, cluster=ids[m], file=file, service=service) for m in where.members
    ]
    if output == "text":
        print(f"Karmada places ServiceExport {key} in {', '.join(where.members)} ({where.policy})")
        print()
        for finding in findings:
            emit(finding, output)
            print()
    else:
        doc = {
            "placement": {"clusters": list(where.members), "by": where.policy},
            "findings": [data(f) for f in findings],
        }
        if output == "json":
            print(json.dumps(doc, indent=2))
        else:
            print(yaml.safe_dump(doc, sort_keys=False), end="")
    return max(1 if f.fails else 0 for f in findings)
