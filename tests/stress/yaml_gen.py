"""Random and hostile manifest files for the YAML fuzz (tests/stress/test_yaml_fuzz.py, and
bench/yaml_fuzz.py for the long form).

Each case is a file text and the number of objects it was made of: well-formed objects
with one field given a wrong type or value, byte-level mutations of valid YAML, alias and
merge-key bombs, deep nesting, huge scalars, Python/unknown tags, and bytes that are not
UTF-8. Names come from an alphabet the checker's own good objects never use.
"""

from __future__ import annotations

import copy
import ipaddress
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEMPLATES: list[dict[str, Any]] = [
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
    },
    {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "svc-x",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "svc"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
    },
    {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {
            "name": "svc",
            "namespace": "default",
            "annotations": {"clusterset.io/dns-policy": "local-first"},
        },
    },
    {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceImport",
        "metadata": {"name": "svc", "namespace": "default"},
        "spec": {"type": "ClusterSetIP", "ips": ["10.0.0.1"], "ports": [{"port": 80}]},
    },
    {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "svc-mcs",
            "namespace": "default",
            "labels": {
                "multicluster.kubernetes.io/service-name": "svc",
                "multicluster.kubernetes.io/source-cluster": "member3",
            },
        },
        "addressType": "IPv6",
        "endpoints": [{"addresses": ["fd00::5"], "hostname": "pod-a"}],
    },
]

JUNK_VALUES: list[Callable[[random.Random], Any]] = [
    lambda r: r.randint(-(2**70), 2**70),
    lambda r: r.random() * 1e300,
    lambda r: r.choice([True, False, None]),
    lambda r: [r.randint(0, 9) for _ in range(r.randint(0, 5))],
    lambda r: {"k": {"nested": [1, {"x": None}]}},
    lambda r: "x" * r.choice([0, 1, 63, 64, 254, 100_000]),
    lambda r: "a\x00b",
    lambda r: "Bad_Name.x",
    lambda r: "Name Space",
    lambda r: "\u202eevil\u00e9\U0001f600",
    lambda r: "10.0.0.300",
    lambda r: "::ffff:1.2.3.4",
    lambda r: "not-an-ip",
    lambda r: r.randint(0, 70000),
    lambda r: [],
    lambda r: {},
]
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper)


TEXT_NOISE = ":-[]{}&*!|>'\"\n\t #%@,?<=~\\"


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _name(r: random.Random) -> str:
    return "f" + "".join(r.choice("qwzjkv0123456789") for _ in range(r.randint(1, 12)))


def wrong_field(r: random.Random) -> tuple[str, int]:
    obj = copy.deepcopy(r.choice(TEMPLATES))
    obj["metadata"]["name"] = _name(r)
    for _ in range(r.randint(1, 3)):
        path = r.choice(_paths(obj))
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        if r.random() < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = r.choice(JUNK_VALUES)(r)
    return _dump(obj), 1


def valid_objects(r: random.Random) -> tuple[str, int]:
    docs = []
    for _ in range(r.randint(1, 5)):
        obj = copy.deepcopy(r.choice(TEMPLATES))
        obj["metadata"]["name"] = _name(r)
        docs.append(_dump(obj))
    if r.random() < 0.3:
        items = [yaml.safe_load(d) for d in docs]
        return _dump({"apiVersion": "v1", "kind": "List", "items": items}), len(items)
    return "---\n".join(docs), len(docs)


def mutated_text(r: random.Random) -> tuple[str, int]:
    text, n = valid_objects(r)
    chars = list(text)
    for _ in range(r.randint(1, 12)):
        op = r.random()
        i = r.randrange(len(chars) + 1)
        if op < 0.4:
            chars.insert(i, r.choice(TEXT_NOISE))
        elif op < 0.7 and chars:
            del chars[min(i, len(chars) - 1)]
        elif chars:
            chars[min(i, len(chars) - 1)] = r.choice(TEXT_NOISE)
    if r.random() < 0.2:
        chars = chars[: r.randrange(len(chars) + 1)]  # truncated
    return "".join(chars), n


def alias_bomb(r: random.Random) -> tuple[str, int]:
    depth, fan = r.randint(3, 14), r.randint(2, 10)
    lines = ["a0: &a0 [" + ",".join(['"lol"'] * fan) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, depth)]
    where = r.choice(["annotations", "labels", "spec"])
    anchors = "\n  ".join(lines)
    return (
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n"
        f"x:\n  {anchors}\nmetadata:\n  name: {_name(r)}\n  namespace: default\n"
        + (f"  {where}: {{k: *a{depth - 1}}}\n" if where != "spec" else f"spec: *a{depth - 1}\n")
    ), 1


def merge_bomb(r: random.Random) -> tuple[str, int]:
    depth = r.randint(5, 40)
    lines = ["m0: &m0 {k0: v}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: v}}" for i in range(1, depth)]
    return "\n".join(lines) + f"\nkind: Service\napiVersion: v1\nspec: *m{depth - 1}\n", 1


def deep(r: random.Random) -> tuple[str, int]:
    n = r.choice([50, 99, 101, 500, 999, 5000])
    if r.random() < 0.5:
        return "x: " + "[" * n + "]" * n + "\n", 1
    return "".join("  " * i + f"k{i}:\n" for i in range(min(n, 3000))) + "  " * n + "v\n", 1


def huge(r: random.Random) -> tuple[str, int]:
    obj = copy.deepcopy(TEMPLATES[2])
    obj["metadata"]["name"] = _name(r)
    obj["metadata"]["annotations"] = {"clusterset.io/x": "y" * r.choice([300_000, 1_000_000])}
    return _dump(obj), 1


def tags(r: random.Random) -> tuple[str, int]:
    tag = r.choice(
        [
            "!!python/object/apply:os.system ['true']",
            "!!python/name:os.system",
            "!!binary aGVsbG8=",
            "!!set {a, b}",
            "!!timestamp 2001-12-14",
            "!custom thing",
            "!!float .nan",
            "!!omap [a: 1]",
        ]
    )
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {_name(r)}}}\nspec: {tag}\n", 1


def not_utf8(r: random.Random) -> tuple[bytes, int]:
    return bytes(r.randrange(256) for _ in range(r.randint(1, 400))), 1


GENERATORS: list[Callable[[random.Random], tuple[Any, int]]] = [
    wrong_field,
    wrong_field,
    wrong_field,
    valid_objects,
    mutated_text,
    mutated_text,
    alias_bomb,
    merge_bomb,
    deep,
    huge,
    tags,
    not_utf8,
]


def case(r: random.Random) -> tuple[str | bytes, int, str]:
    """(file content, objects it was made of, generator name)."""
    gen = r.choice(GENERATORS)
    content, n = gen(r)
    return content, n, gen.__name__


GOOD = """\
apiVersion: v1
kind: Service
metadata: {name: good-svc, namespace: default}
spec:
  clusterIP: 10.96.0.99
  ports: [{name: http, port: 80}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: good-svc, namespace: default}
"""


@dataclass
class Report:
    cases: int = 0
    bad_lines: int = 0
    by_generator: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    slowest_generator: str = ""
    failures: list[str] = field(default_factory=list)


def fuzz(work: Path, *, cases: int, seed: int, reconcile_every: int = 25) -> Report:
    """Feed `cases` generated files, one at a time, to the manifest reader of a ROOT that also
    holds good objects; every `reconcile_every` cases also reconcile and compile a zone."""
    from clusterset.controller.manifest import ClusterSetFeed
    from clusterset.manifests.load import FolderReader
    from clusterset.model.ids import ClusterId, ServiceKey
    from clusterset.server.app import compile_view
    from clusterset.zone.settings import ZoneSettings

    r = random.Random(seed)
    root = work / "clusters"
    (root / "member1").mkdir(parents=True)
    (root / "member2").mkdir()
    (root / "member1" / "good.yaml").write_text(GOOD)
    reader = FolderReader(root / "member1")
    feed = ClusterSetFeed(root, cidrs=_cidrs(), state_file=work / "alloc.json")
    report = Report()
    previous: Path | None = None
    good = ServiceKey("default", "good-svc")
    for i in range(cases):
        content, n, gen = case(r)
        path = root / "member1" / f"fuzz-{i}.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
            text = ""
        else:
            path.write_text(content)
            text = content
        if previous is not None:
            previous.unlink()
        previous = path
        report.cases += 1
        report.by_generator[gen] += 1
        started = time.perf_counter()
        try:
            objs, errors = reader.read()
        except Exception as exc:  # the property under test: never
            report.failures.append(f"case {i} ({gen}): {type(exc).__name__}: {exc}"[:300])
            continue
        took = time.perf_counter() - started
        if took > report.slowest:
            report.slowest, report.slowest_generator = took, gen
        mine = [e for e in errors if e.startswith(str(path))]
        report.bad_lines += len(mine)
        if len(mine) != len(errors):
            report.failures.append(f"case {i} ({gen}): errors about other files: {errors}"[:300])
        if any("internal error" in e for e in mine):
            report.failures.append(f"case {i} ({gen}): {mine}"[:300])
        if any("\n" in e or len(e) > 2000 for e in mine):
            report.failures.append(f"case {i} ({gen}): an error is not one short line")
        if len(mine) > n + text.count("---") + 1:
            report.failures.append(f"case {i} ({gen}): {len(mine)} lines for {n} object(s)")
        if good not in objs.services or good not in objs.exports:
            report.failures.append(f"case {i} ({gen}): the good objects were lost")
        if reconcile_every and i % reconcile_every == 0:
            try:
                observed = feed.observe(quiet=True)
                view = feed.view(observed, ClusterId("member2"))
                compile_view(view, ZoneSettings())
            except Exception as exc:
                report.failures.append(f"case {i} ({gen}): reconcile/zone: {exc!r}"[:300])
    return report


def _cidrs() -> dict[Any, Any]:
    from clusterset.model.objects import IPFamily

    return {
        IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/16"),
        IPFamily.IPV6: ipaddress.IPv6Network("fd63:6c75:7374::/112"),
    }
