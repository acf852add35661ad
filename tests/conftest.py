"""Shared fixtures: one real control plane (etcd + kube-apiservers) per session, with our CRDs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def eventually(
    what: str, check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            got = check()
        except AssertionError as exc:
            last = exc
        else:
            if got:
                return got
            last = got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def install_crds(cp: ControlPlane, cluster: str) -> None:
    for path in sorted((ROOT / "deploy" / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            status, body = cp.request(
                cluster,
                "PATCH",
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}?fieldManager=tests&force=true",
                doc,
                content_type="application/apply-patch+yaml",
            )
            assert status in (200, 201), body

            def established(name: str = name) -> bool:
                _, crd = cp.request(
                    cluster,
                    "GET",
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                )
                conds = (crd.get("status") or {}).get("conditions") or []
                return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

            eventually(f"CRD {name} established in {cluster}", established)
    for group_path in ("/apis/multicluster.x-k8s.io/v1beta1", "/apis/about.k8s.io/v1beta1"):

        def served(path: str = group_path) -> bool:
            return cp.request(cluster, "GET", path)[0] == 200

        eventually(f"{group_path} served in {cluster}", served)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """member1..member3 on one etcd, each its own service CIDR, with our CRDs installed.
    member1 and member2 are dual-stack (IPv4 primary: a Service that asks no family is IPv4,
    as before), member3 IPv4 only: a mixed clusterset."""
    with ControlPlane(("member1", "member2", "member3"), dual_stack=("member1", "member2")) as cp:
        for c in cp.cluster_names:
            install_crds(cp, c)
        yield cp
