"""Bad input: one clear line naming file, document, kind/name and field; nothing good is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterset.manifests.load import FolderReader
from clusterset.model.ids import ServiceKey

GOOD = """\
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {name: serve, namespace: default}
spec:
  type: ClusterSetIP
  ips: [10.0.0.1]
  ports: [{port: 80, name: http}]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("kind: [unclosed\n", "document 0: invalid YAML (line 2)", id="yaml-syntax"),
        pytest.param(
            GOOD.replace("port: 80", "port: eighty"),
            "ServiceImport default/serve: spec.ports[0].port: expected integer 1-65535",
            id="port-type",
        ),
        pytest.param(
            GOOD.replace("type: ClusterSetIP", "type: Wobbly"),
            "ServiceImport default/serve: spec.type: expected ClusterSetIP or Headless",
            id="bad-type",
        ),
        pytest.param(
            GOOD.replace("10.0.0.1", "10.0.0.300"), "spec.ips[0]: not an IP address", id="bad-ip"
        ),
        pytest.param(
            GOOD.replace("  name: serve, ", "  ").replace(
                "metadata: {name: serve, namespace: default}", "metadata: {namespace: default}"
            ),
            "ServiceImport default/?: metadata.name: required field is missing",
            id="no-name",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n",
            "Gizmo g: kind: unknown kind v1/Gizmo",
            id="unknown-kind",
        ),
        pytest.param("- 1\n- 2\n", "expected a Kubernetes object", id="not-a-mapping"),
        pytest.param(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n  namespace: ns\n"
            "  labels: {multicluster.kubernetes.io/service-name: x, multicluster.kubernetes.io/source-cluster: Bad_ID}\n"
            "addressType: IPv4\nendpoints: []\n",
            "EndpointSlice ns/s: metadata.labels[multicluster.kubernetes.io/source-cluster]: cluster ID 'Bad_ID' is not an RFC-1123 DNS label",
            id="invalid-cluster-id",
        ),
    ],
)
def test_bad_document_is_one_line_naming_file_document_and_field(
    tmp_path: Path, text: str, fragment: str
) -> None:
    write(tmp_path, "good.yaml", GOOD.replace("serve", "other"))
    bad = write(tmp_path, "bad.yaml", text)
    objs, errors = FolderReader(tmp_path).read()
    assert len(errors) == 1
    assert "\n" not in errors[0]
    assert errors[0].startswith(f"{bad}: document 0")
    assert fragment in errors[0]
    assert ServiceKey("default", "other") in objs.imports  # the rest still loads


def test_bad_edit_keeps_last_good_version(tmp_path: Path) -> None:
    p = write(tmp_path, "si.yaml", GOOD)
    reader = FolderReader(tmp_path)
    objs, errors = reader.read()
    assert errors == [] and objs.imports[ServiceKey("default", "serve")].ips == ("10.0.0.1",)
    p.write_text(GOOD.replace("port: 80", "port: -1"))
    objs, errors = reader.read()
    assert len(errors) == 1
    assert objs.imports[ServiceKey("default", "serve")].ips == ("10.0.0.1",)
    p.write_text("{{{ not yaml")
    objs, errors = reader.read()
    assert len(errors) == 1 and "invalid YAML" in errors[0]
    assert ServiceKey("default", "serve") in objs.imports
    p.write_text(GOOD.replace("10.0.0.1", "10.0.0.2"))
    objs, errors = reader.read()
    assert errors == [] and objs.imports[ServiceKey("default", "serve")].ips == ("10.0.0.2",)
    p.unlink()
    objs, errors = reader.read()
    assert objs.imports == {}


def test_list_kind_and_multi_document(tmp_path: Path) -> None:
    items = GOOD.replace("\n", "\n    ")
    write(tmp_path, "list.yaml", f"apiVersion: v1\nkind: List\nitems:\n  - {items}\n")
    write(
        tmp_path,
        "multi.yaml",
        GOOD.replace("serve", "a") + "---\n" + GOOD.replace("serve", "b") + "---\n",
    )
    objs, errors = FolderReader(tmp_path).read()
    assert errors == []
    assert {k.name for k in objs.imports} == {"serve", "a", "b"}


def test_v1alpha1_and_flattened_service_imports(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD.replace("v1beta1", "v1alpha1"))
    write(
        tmp_path,
        "b.yaml",
        "apiVersion: multicluster.x-k8s.io/v1alpha2\nkind: ServiceImport\n"
        "metadata: {name: flat, namespace: default}\ntype: Headless\nports: [{port: 5432}]\n",
    )
    objs, errors = FolderReader(tmp_path).read()
    assert errors == []
    assert objs.imports[ServiceKey("default", "flat")].type.value == "Headless"
    assert objs.imports[ServiceKey("default", "serve")].ips == ("10.0.0.1",)


def test_error_inside_list_names_the_item(tmp_path: Path) -> None:
    bad = GOOD.replace("port: 80", "port: 0").replace("\n", "\n    ")
    write(tmp_path, "list.yaml", f"apiVersion: v1\nkind: List\nitems:\n  - {bad}\n")
    _, errors = FolderReader(tmp_path).read()
    assert (
        len(errors) == 1
        and "document 0.items[0]: ServiceImport default/serve: spec.ports[0].port" in errors[0]
    )
