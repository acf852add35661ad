"""The controller on member kubeconfigs (no Karmada proxy) beside a real Karmada v1.18.2.

The article's manual flow: Karmada propagates a ServiceImport template to member2, and
Karmada's derived-serve is the data path there. Karmada puts its template back over any
field its interpreter does not retain, so a controller that writes `spec.ips` into that
import without clusterset's retention rule in Karmada's control plane fights it (275
versions of the import in 60 s on cde25eb). Without a way to reach the karmada-apiserver the
controller leaves Karmada's import alone and says once what to do; with
`--karmada-control-plane` it installs the retention rule there and fills `spec.ips`, and the
import stays still either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.controlplane import ControlPlane
from tests.integration.test_karmada import (
    _article,
    _diagnosed,
    _get,
    _manual_import,
    _member1_endpoints,
    _versions,
    dig,
    member2_dns,
)
from tests.integration.test_kube_faults import Controller, controller, hub_args
from tests.karmada import MCS_ALPHA, Karmada, mcs_crd_policies

pytestmark = [pytest.mark.kube, pytest.mark.timeout(600)]

IMPORT = f"{MCS_ALPHA}/namespaces/default/serviceimports/serve"
DERIVED = "/api/v1/namespaces/default/services/derived-serve"
RULES = "/apis/config.karmada.io/v1alpha1/resourceinterpretercustomizations"
RETENTION = f"{RULES}/clusterset-serviceimport-ips-v1alpha1"
SAID = "ServiceImport default/serve is Karmada's"


@pytest.fixture(scope="module")
def manual_flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Karmada with the article's objects and its manual ServiceImport for member2, and
    member2's clusterset DNS server (on member kubeconfigs)."""
    with (
        ControlPlane(("karmada", "member1", "member2"), aggregators=("karmada",)) as cp,
        Karmada(cp, members=("member1", "member2")) as km,
    ):
        for path, obj in mcs_crd_policies():
            km.apply(path, obj)
        for m in km.members:
            km.wait(
                f"{m}'s Cluster lists ServiceImport",
                lambda m=m: km.api_enabled(m, "multicluster.x-k8s.io/v1alpha1", "ServiceImport"),
                timeout=90,
            )
        for path, obj in [*_article(), *_manual_import()]:
            km.apply(path, obj)
        eventually(
            "Service serve propagated to member1",
            lambda: _get(cp, "member1", "/api/v1/namespaces/default/services/serve"),
            timeout=60,
        )
        _member1_endpoints(cp)
        eventually(
            "Karmada's import and derived-serve in member2",
            lambda: _get(cp, "member2", IMPORT) and _get(cp, "member2", DERIVED),
            timeout=120,
        )
        with member2_dns(cp) as (port, _dns):
            yield {"cp": cp, "km": km, "dns_port": port, "tmp": tmp_path_factory.mktemp("ctl")}


def _member_mode(flow: dict[str, Any], log: str, *extra: str) -> Any:
    members = ("member1", "member2")
    extra = ("--source-lease-namespace", "default", *extra)
    return controller(flow["tmp"] / log, *hub_args(flow["cp"], members, "beside-karmada", *extra))


def _answered(flow: dict[str, Any], ctl: Controller) -> str | None:
    """derived-serve's ClusterIP once member2's DNS answers it."""
    ctl.check_alive()
    flow["km"].check_alive()
    ip = str(_get(flow["cp"], "member2", DERIVED)["spec"]["clusterIP"])
    return ip if dig(flow["dns_port"], "serve.default.svc.clusterset.local") == [ip] else None


def test_without_karmadas_control_plane_its_import_is_left_alone_and_said_once(
    manual_flow: dict[str, Any],
) -> None:
    cp: ControlPlane = manual_flow["cp"]
    with _member_mode(manual_flow, "plain.log") as ctl, _diagnosed(ctl):
        ip = eventually("member2's DNS answers derived-serve", lambda: _answered(manual_flow, ctl))
        eventually("the line saying what to do", lambda: SAID in ctl.output(), timeout=30)
        seen = _versions(cp, "member2", IMPORT, 60)
        print(f"\nmember2 ServiceImport versions in 60 s, no control plane: {len(seen)} {seen}")
        assert len(seen) <= 3, seen
        assert not (_get(cp, "member2", IMPORT).get("spec") or {}).get("ips")
        assert ctl.output().count(SAID) == 1, ctl.output()[-3000:]
        assert "--karmada-control-plane" in ctl.output()
        assert dig(manual_flow["dns_port"], "serve.default.svc.clusterset.local") == [ip]
    assert _get(cp, manual_flow["km"].control, RETENTION) is None


def test_with_karmadas_control_plane_its_import_gets_ips_and_stays_still(
    manual_flow: dict[str, Any],
) -> None:
    cp: ControlPlane = manual_flow["cp"]
    km: Karmada = manual_flow["km"]
    control: Path = cp.context_kubeconfig(km.control)
    extra = ("--karmada-control-plane", str(control))
    with _member_mode(manual_flow, "control.log", *extra) as ctl, _diagnosed(ctl):
        ip = eventually("member2's DNS answers derived-serve", lambda: _answered(manual_flow, ctl))

        def filled() -> bool:
            ctl.check_alive()
            return (_get(cp, "member2", IMPORT).get("spec") or {}).get("ips") == [ip]

        eventually("Karmada's import in member2 with spec.ips", filled, timeout=60)
        assert _get(cp, km.control, RETENTION) is not None
        seen = _versions(cp, "member2", IMPORT, 60)
        print(f"\nmember2 ServiceImport versions in 60 s, with the control plane: {len(seen)}")
        assert len(seen) <= 3, seen
        assert filled()
        assert SAID not in ctl.output(), ctl.output()[-3000:]
    for version in ("v1alpha1", "v1beta1"):  # as found: the other test may run after this one
        cp.request(km.control, "DELETE", f"{RULES}/clusterset-serviceimport-ips-{version}")
