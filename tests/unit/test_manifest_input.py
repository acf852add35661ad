"""Objects the apiserver would reject are rejected here too, one line each (issue 11, items 2,
12, 13); YAML that expands without bound is refused before it is built."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from clusterset.manifests.load import FolderReader
from clusterset.model.bag import Objects
from clusterset.model.ids import ServiceKey
from clusterset.model.labels import LABEL_OWNED

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: serve, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}, {name: grpc, port: 9090}]
"""
SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: serve-abc
  namespace: default
  labels: {kubernetes.io/service-name: serve}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: [10.244.1.5]
    hostname: pod-a
"""
EXPORT = """\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: serve
  namespace: default
  annotations: {clusterset.io/dns-policy: local-first}
"""


def read(tmp_path: Path, text: str) -> tuple[Objects, list[str]]:
    (tmp_path / "x.yaml").write_text(text)
    return FolderReader(tmp_path).read()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(
            SERVICE.replace("  ports: [{name: http, port: 80}, {name: grpc, port: 9090}]\n", ""),
            "Service default/serve: spec.ports: required: at least one port",
            id="service-without-ports",
        ),
        pytest.param(
            SERVICE.replace("name: grpc", "name: http"),
            "Service default/serve: spec.ports[1].name: duplicate port name 'http'",
            id="duplicate-port-name",
        ),
        pytest.param(
            SERVICE.replace("{name: grpc, port: 9090}", "{port: 9090}"),
            "spec.ports[1].name: required when there is more than one port",
            id="unnamed-second-port",
        ),
        pytest.param(
            SERVICE.replace("{name: grpc, port: 9090}", "{name: again, port: 80}"),
            "spec.ports[1]: duplicate port 80/TCP",
            id="duplicate-port-number",
        ),
        pytest.param(
            SERVICE.replace("port: 9090", "port: 70000"),
            "spec.ports[1].port: expected integer 1-65535",
            id="port-range",
        ),
        pytest.param(
            SERVICE.replace("name: serve,", "name: " + "a" * 70 + ","),
            "metadata.name: 'aaaaaaaaaaaaaaaaaaaa'... is 70 characters, more than 63",
            id="name-70-chars",
        ),
        pytest.param(
            SERVICE.replace("name: serve,", "name: Bad_Name.x,"),
            "metadata.name: 'Bad_Name.x' is not an RFC 1035 label",
            id="name-bad-chars",
        ),
        pytest.param(
            SERVICE.replace("namespace: default", 'namespace: "Name Space"'),
            "metadata.namespace: 'Name Space' is not an RFC 1123 label",
            id="namespace-with-space",
        ),
        pytest.param(
            SERVICE.replace("name: serve,", 'name: "se\\0rve",'),
            "metadata.name: 'se\\x00rve' is not an RFC 1035 label",
            id="nul-byte",
        ),
        pytest.param(
            SLICE.replace("[10.244.1.5]", "['fd00::5']"),
            "EndpointSlice default/serve-abc: endpoints[0].addresses[0]: 'fd00::5' is not an IPv4 address",
            id="ipv6-in-ipv4-slice",
        ),
        pytest.param(
            SLICE.replace("hostname: pod-a", "hostname: Pod_A"),
            "endpoints[0].hostname: 'Pod_A' is not an RFC 1123 label",
            id="bad-hostname",
        ),
        pytest.param(
            SLICE.replace(
                "ports: [{name: http, port: 8080}]",
                "ports: [{name: h, port: 1}, {name: h, port: 2}]",
            ),
            "ports[1].name: duplicate port name 'h'",
            id="slice-duplicate-port-name",
        ),
        pytest.param(
            SLICE.replace("addressType: IPv4", "addressType: IPv5"),
            "addressType: expected IPv4, IPv6 or FQDN, got 'IPv5'",
            id="bad-address-type",
        ),
        pytest.param(
            EXPORT.replace(
                "{clusterset.io/dns-policy: local-first}", "{clusterset.io/min-ready: 2}"
            ),
            "ServiceExport default/serve: metadata.annotations[clusterset.io/min-ready]: expected string, got int",
            id="annotation-not-string",
        ),
        pytest.param(
            EXPORT.replace("{clusterset.io/dns-policy: local-first}", "{clusterset.io/x: [a, b]}"),
            "metadata.annotations[clusterset.io/x]: expected string, got list",
            id="annotation-list",
        ),
        pytest.param(
            SLICE.replace(
                "{kubernetes.io/service-name: serve}",
                "{kubernetes.io/service-name: serve, tier: {a: 1}}",
            ),
            "metadata.labels[tier]: expected string, got dict",
            id="label-not-string",
        ),
        pytest.param(
            SLICE.replace(
                "{kubernetes.io/service-name: serve}", "{kubernetes.io/service-name: 'has space'}"
            ),
            "metadata.labels[kubernetes.io/service-name]: 'has space' is not a valid label value",
            id="label-value-syntax",
        ),
    ],
)
def test_what_the_apiserver_rejects_is_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    _, errors = read(tmp_path, text)
    assert len(errors) == 1, errors
    assert "\n" not in errors[0]
    assert fragment in errors[0]


def test_valid_objects_still_load(tmp_path: Path) -> None:
    objs, errors = read(tmp_path, SERVICE + "---\n" + SLICE + "---\n" + EXPORT)
    assert errors == []
    assert ServiceKey("default", "serve") in objs.services


def bomb(levels: int) -> str:
    """The 'billion laughs' annotation of the issue: each anchor repeats the previous one 9x."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    anchors = "\n  ".join(lines)
    return (
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n"
        f"x:\n  {anchors}\n"
        "metadata:\n  name: serve\n  namespace: default\n"
        f"  annotations: {{clusterset.io/bomb: *a{levels - 1}}}\n"
    )


def test_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    text = bomb(9)
    assert len(text) < 1200
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    objs, errors = read(tmp_path, text + "---\n" + SERVICE)
    took = time.perf_counter() - started
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert len(errors) == 1 and "alias or merge-key bomb" in errors[0], errors
    assert took < 2.0 and grew_mb < 100
    assert not objs.exports


def test_merge_key_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["m0: &m0 {k0: v}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: v}}" for i in range(1, 30)]
    _, errors = read(tmp_path, "\n".join(lines) + "\n")
    assert len(errors) == 1 and "expands to too many nodes" in errors[0], errors


def test_duplicate_object_in_two_files_keeps_what_was_served(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(SERVICE)
    reader = FolderReader(tmp_path)
    objs, errors = reader.read()
    assert errors == []
    # "a.yaml" sorts first and redefines default/serve: b.yaml's copy stays served.
    (tmp_path / "a.yaml").write_text(SERVICE.replace("10.96.0.10", "10.96.0.99"))
    objs, errors = reader.read()
    assert objs.services[ServiceKey("default", "serve")].cluster_ips == ("10.96.0.10",)
    (line,) = errors
    assert line.startswith(f"{tmp_path / 'a.yaml'}: Service default/serve: also defined in")
    assert str(tmp_path / "b.yaml") in line
    # A fresh reader (restart) has no history: the first file by name wins, deterministically.
    objs, errors = FolderReader(tmp_path).read()
    assert objs.services[ServiceKey("default", "serve")].cluster_ips == ("10.96.0.99",)
    assert len(errors) == 1


def test_duplicate_object_in_one_file_first_document_wins(tmp_path: Path) -> None:
    objs, errors = read(tmp_path, SERVICE + "---\n" + SERVICE.replace("10.96.0.10", "10.96.0.99"))
    assert objs.services[ServiceKey("default", "serve")].cluster_ips == ("10.96.0.10",)
    (line,) = errors
    assert "document 1: Service default/serve: also defined in document 0" in line


def test_every_kind_of_bag_content_survives_the_file_union(tmp_path: Path) -> None:
    owned = SERVICE.replace(
        "metadata: {name: serve, namespace: default}",
        f"metadata: {{name: serve, namespace: default, labels: {{{LABEL_OWNED}: 'true'}}}}",
    )
    objs, errors = read(tmp_path, owned + "---\n" + SLICE)
    assert errors == []
    assert objs.own_services == {ServiceKey("default", "serve")}
