"""Monitoring as a platform team runs it: the alerts unit-tested by a real promtool, the chart's
ServiceMonitor, PrometheusRule and dashboard ConfigMap rendered from the shipped files, and
every metric a rule or a dashboard panel queries scraped from a live /metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import eventually
from tests.controlplane import ControlPlane
from tests.integration.servers import ROOT, clusterset, free_port, need
from tests.integration.test_deploy import by_kind, one, render

pytestmark = pytest.mark.integration

FILES = ROOT / "deploy" / "chart" / "clusterset" / "files"
RULES = FILES / "prometheus-rules.yaml"
DASHBOARD = FILES / "grafana-dashboard.json"
RULES_TEST = ROOT / "tests" / "monitoring" / "rules_test.yaml"
ALL_ON = ("--set", "monitoring.serviceMonitor.enabled=true",
          "--set", "monitoring.prometheusRule.enabled=true",
          "--set", "monitoring.grafanaDashboard.enabled=true")  # fmt: skip


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = need("promtool")
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES_TEST)]):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
    # Every alert of the file has a test in rules_test.yaml.
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for t in case["alert_rule_test"]}  # fmt: skip
    assert alerts == tested, alerts ^ tested


def test_chart_renders_the_shipped_rules_dashboard_and_scrape_config() -> None:
    objs = render(*ALL_ON, "--set", "controller.enabled=true")
    rule = one(objs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    dashboard = one(objs, "ConfigMap", "clusterset-dashboard")
    assert json.loads(dashboard["data"]["clusterset.json"]) == json.loads(DASHBOARD.read_text())
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    monitor = one(objs, "ServiceMonitor")
    service = one(objs, "Service", "clusterset-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    # The headless Service reaches both components' pods, on their own `metrics` port.
    selector = service["spec"]["selector"].items()
    for dep in by_kind(objs, "Deployment"):
        template = dep["spec"]["template"]
        assert selector <= template["metadata"]["labels"].items(), dep["metadata"]["name"]
        ports = [p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])]
        assert "metrics" in ports, dep["metadata"]["name"]
    assert not [o for o in render() if o["kind"] in ("ServiceMonitor", "PrometheusRule")]


def queried_metrics() -> set[str]:
    """Metric names in every rule expression and dashboard query (histogram series named by
    their family)."""
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    names = {m for e in exprs for m in re.findall(r"\bclusterset_[a-z_]+", e)}
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def scrape(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


@pytest.mark.kube
def test_every_queried_metric_is_exported(control_plane: ControlPlane, tmp_path: Path) -> None:
    """Scraped from a live `run` (the DNS server's metrics) and a live `controller` on real
    apiservers (the hub's): a rule or panel on a metric nobody exports would never fire."""
    dport = free_port()
    exported: set[str] = set()
    with clusterset("run", "--manifests", str(ROOT / "examples" / "clusters"), "--cluster",
                    "member2", "--state-file", str(tmp_path / "a.json"),
                    "--metrics-listen", f"127.0.0.1:{dport}"):  # fmt: skip
        exported |= scrape(dport)
    cport = free_port()
    # As the unprivileged user: every metric family is registered at start, and a controller
    # that may not read or write leaves the session's clusters to the other tests.
    with subprocess.Popen(
        [sys.executable, "-m", "clusterset", "controller", "--kubeconfig",
         str(control_plane.user_kubeconfig()), "--context", "member1", "--context", "member2",
         "--metrics-listen", f"127.0.0.1:{cport}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) as proc:  # fmt: skip
        try:
            started = time.monotonic()

            def with_histogram() -> set[str] | None:
                m = _try_scrape(cport)
                return m if "clusterset_reconcile_duration_seconds" in m else None

            hub = eventually(
                "the controller's /metrics with its reconcile histogram",
                with_histogram,
                timeout=60,
            )
            exported |= hub
            print(f"controller metrics after {time.monotonic() - started:.1f} s")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            finally:
                proc.kill()
    missing = queried_metrics() - exported
    assert not missing, f"queried but not exported: {sorted(missing)}"


def _try_scrape(port: int) -> set[str]:
    try:
        return scrape(port)
    except OSError:
        return set()
