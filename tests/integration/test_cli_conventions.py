"""The CLI as a kubectl user meets it: kubeconfig faults are one line and exit 2 on every
command that takes one, and the kubeconfig defaults are kubectl's."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration import servers
from tests.integration.servers import ROOT
from tests.integration.test_dns_server import IMPORT

pytestmark = pytest.mark.integration

GOOD = """\
apiVersion: v1
kind: Config
clusters:
  - name: c1
    cluster: {server: "https://127.0.0.1:1"}
contexts:
  - name: member1
    context: {cluster: c1, user: u1}
  - name: dangling
    context: {cluster: nowhere, user: u1}
users:
  - name: u1
    user: {token: t}
"""

# (kubeconfig content or None for a missing file, extra args, what the one line says)
FAULTS = {
    "missing": (None, [], "cannot read: No such file or directory"),
    "empty": ("", [], "not a kubeconfig (no contexts or no clusters)"),
    "bad YAML": ("clusters: [\n  - {name: a\n", [], "not YAML at line"),
    "a list": ("- a\n- b\n", [], "not a kubeconfig"),
    "no current-context": (GOOD, [], "no current-context; name one with --context"),
    "unknown context": (GOOD, ["--context", "nosuch"], "--context nosuch: not in --kubeconfig"),
    "dangling context": (GOOD, ["--context", "dangling"], "names a cluster or user it lacks"),
    "dangling current-context": (
        GOOD + "current-context: gone\n",
        [],
        "current-context 'gone' is not one of its contexts",
    ),
}

# Every command that takes --kubeconfig, with what else it needs to get that far.
COMMANDS = {
    "status": ["status"],
    "dns": ["dns", "--listen", "127.0.0.1:0"],
    "run": ["run", "--cluster", "member1", "--listen", "127.0.0.1:0"],
    "controller": ["controller"],
    "check": ["check", "--cluster", "member1", "--service", "default/serve"],
    "wire-dns": ["wire-dns", "--server", "10.96.0.53"],
}


def clusterset(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clusterset", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, (out.returncode, out.stderr[-3000:])
    return lines[0]


def kubeconfig(tmp_path: Path, content: str | None) -> Path:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    return path


# Every fault on status; three on each other command (they share the loading code).
CASES = [("status", f) for f in FAULTS] + [
    (c, f) for c in COMMANDS if c != "status" for f in ("missing", "bad YAML", "unknown context")
]


@pytest.mark.parametrize(("command", "fault"), CASES)
def test_kubeconfig_faults_are_one_line_and_exit_2(
    command: str, fault: str, tmp_path: Path
) -> None:
    content, extra, message = FAULTS[fault]
    path = kubeconfig(tmp_path, content)
    line = one_line(clusterset(*COMMANDS[command], "--kubeconfig", str(path), *extra))
    assert message in line, line
    assert str(path) in line or "--context" in line, line


@pytest.mark.parametrize("fault", ["missing", "bad YAML"])
def test_karmada_kubeconfig_faults_name_that_flag(fault: str, tmp_path: Path) -> None:
    content, _, message = FAULTS[fault]
    path = kubeconfig(tmp_path, content)
    for command in ("status", "controller"):
        line = one_line(clusterset(command, "--karmada-kubeconfig", str(path)))
        assert f"--karmada-kubeconfig {path}: " in line and message in line, line


def test_kubeconfig_defaults_are_kubectls(tmp_path: Path) -> None:
    """No source flag: $KUBECONFIG (first existing file of the list), then ~/.kube/config."""
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("clusters: [\n")
    base = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"HOME": str(home)}
    line = one_line(clusterset("status", env=base))
    assert f"--kubeconfig {home}/.kube/config: not YAML" in line, line
    listed = tmp_path / "listed"
    listed.write_text("")
    env = base | {"KUBECONFIG": f"{tmp_path / 'absent'}{os.pathsep}{listed}"}
    line = one_line(clusterset("status", env=env))
    assert f"--kubeconfig {listed}: not a kubeconfig" in line, line
    # --manifests given: no kubeconfig is looked for, whatever the environment says.
    out = clusterset("status", "--manifests", str(tmp_path / "nodir"), env=env)
    assert "--manifests" in one_line(out)
    # Nothing anywhere: the one line says what to give.
    bare = base | {"HOME": str(tmp_path / "nohome")}
    line = one_line(clusterset("status", env=bare))
    assert "--manifests DIR or --kubeconfig is required" in line, line


def test_help_is_h_too_and_examples_keep_their_lines() -> None:
    out = clusterset("status", "-h")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    examples = lines.index("  Examples:")
    assert lines[examples + 1].strip().startswith("clusterset status --manifests"), out.stdout
    assert lines[examples + 2].strip().startswith("clusterset status --kubeconfig"), out.stdout


def test_completion_scripts_and_their_callback() -> None:
    for shell, marker in (("bash", "complete -o"), ("zsh", "#compdef clusterset"),
                          ("fish", "complete --command clusterset")):  # fmt: skip
        out = clusterset("completion", shell)
        assert out.returncode == 0 and marker in out.stdout, (shell, out.stdout[:300])
    assert "expected bash, zsh, fish, powershell" in one_line(clusterset("completion", "tcsh"))
    # What the bash script asks back, as bash would: the commands and flags that match.
    env = os.environ | {"_CLUSTERSET_COMPLETE": "complete_bash", "COMP_CWORD": "1",
                        "COMP_WORDS": "clusterset st"}  # fmt: skip
    assert clusterset(env=env).stdout.split() == ["status"]
    env |= {"COMP_CWORD": "2", "COMP_WORDS": "clusterset status --kubec"}
    assert clusterset(env=env).stdout.split() == ["--kubeconfig"]


def test_kubectl_plugin_entry_point() -> None:
    """`kubectl clusterset ...`: kubectl runs `kubectl-clusterset` from $PATH."""
    plugin = Path(sys.executable).parent / "kubectl-clusterset"
    out = subprocess.run([str(plugin), "status", "-h"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: kubectl clusterset status [OPTIONS]"), out.stdout[:200]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_interrupt_exits_130_and_sigterm_0(sig: signal.Signals, code: int, tmp_path: Path) -> None:
    """docs/reference.md's exit codes: Ctrl-C is 130 (after the same graceful stop)."""
    (tmp_path / "member2").mkdir()
    with servers.clusterset("dns", "--manifests", str(tmp_path / "member2")) as (_port, proc):
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == code


def test_status_is_a_lint_and_greppable(tmp_path: Path) -> None:
    """Findings (an unreadable manifest, an invalid export, a conflict) exit 1, each said
    once on stderr; the table has no wrapped cell and no trailing blank, piped or not."""
    root = tmp_path / "clusters"
    shutil.copytree(ROOT / "examples" / "clusters", root)
    (root / "member1" / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: default}\n"
        "spec: {ports: [{port: 99999}]}\n"
    )
    state = ["--state-file", str(tmp_path / "alloc.json")]
    out = clusterset("status", "--manifests", str(root), "-o", "wide", *state)
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("spec.ports[0].port: expected integer 1-65535") == 1, out.stderr
    lines = out.stdout.splitlines()
    assert all(line == line.rstrip() for line in lines)
    web = [line for line in lines if line.startswith("member2 ") and " web " in line]
    assert len(web) == 2 and "1/2 clusters disagree." in web[0], lines  # one line, unwrapped
    assert web[0].split()[:6] == ["member2", "default", "web", "True(Valid)", "True(Exported)",
                                  "True(PortConflict)"]  # fmt: skip
    # One namespace without findings: exit 0; -o name is kubectl's one name per line.
    (root / "member1" / "bad.yaml").unlink()  # an unreadable file is a finding in any -n
    out = clusterset("status", "--manifests", str(root), "-n", "data", "-o", "name", *state)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "member1/serviceexport/data/db", "member2/serviceexport/data/db",
        "member1/serviceimport/data/db", "member2/serviceimport/data/db",
    ]  # fmt: skip
    assert "-n and -A are exclusive" in one_line(
        clusterset("status", "--manifests", str(root), "-n", "data", "-A")
    )


def test_log_queries_logs_both_transports_as_coredns_does(tmp_path: Path) -> None:
    """CoreDNS's `log` plugin's shape: `CLIENT:PORT - ID "TYPE IN NAME PROTO SIZE" RCODE
    SIZE`; UDP and TCP both (TCP was not logged; UDP printed a tuple and a number)."""
    (tmp_path / "member2").mkdir()
    (tmp_path / "member2" / "imports.yaml").write_text(
        IMPORT.format(ip="10.250.0.10", db_ip="10.244.1.20")
    )
    args = ["dns", "--manifests", str(tmp_path / "member2"), "--log-queries"]
    with servers.clusterset(*args) as (port, proc):
        servers.query(port, "serve.default.svc.clusterset.local")
        servers.query(port, "nope.default.svc.clusterset.local", tcp=True)
        time.sleep(0.2)
        log = servers.server_log(proc)
    udp = r'127\.0\.0\.1:\d+ - \d+ "A IN serve\.default\.svc\.clusterset\.local\. udp \d+" NOERROR \d+'
    tcp = r'127\.0\.0\.1:\d+ - \d+ "A IN nope\.default\.svc\.clusterset\.local\. tcp \d+" NXDOMAIN'
    assert re.search(udp, log) and re.search(tcp, log), log


@pytest.mark.parametrize(
    ("name", "rcode", "explained"),
    [
        (
            "db-0.member1.db.data",
            "NOERROR",
            "answer: endpoint db-0 of cluster member1: 10.244.1.20",
        ),
        ("db-9.member1.db.data", "NXDOMAIN", "endpoint db-9 of cluster member1: no such ready"),
        ("x.member1.serve.default", "NXDOMAIN", "endpoint names exist for Headless services only"),
        ("member1.db.data", "NXDOMAIN", "MUST NOT exist (MCS DNS spec 2.3.4/2.4.4): NXDOMAIN"),
    ],
)
def test_resolve_explains_what_it_answered(name: str, rcode: str, explained: str) -> None:
    """An endpoint name was explained with every endpoint of the service; the reserved
    <clusterid>.<svc> form with NXDOMAIN and then answer addresses."""
    out = clusterset("resolve", f"{name}.svc.clusterset.local", "--manifests",
                     str(ROOT / "examples" / "clusters"), "--cluster", "member2", "--explain")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"rcode {rcode}" in out.stdout, out.stdout
    why = out.stdout.split("\nname form: ", 1)[1]
    assert explained in why and "answer addresses" not in why, why
    assert why.count("answer") <= 1, why


def test_start_says_what_it_read_and_how_it_answers(tmp_path: Path) -> None:
    """No silence while a big folder loads: the read, its counts and seconds, the mode, and
    the first zone with the cluster ID it answers as."""
    args = ["run", "--manifests", str(ROOT / "examples" / "clusters"), "--cluster", "member2",
            "--state-file", str(tmp_path / "alloc.json"), "--default-policy", "local-first"]  # fmt: skip
    with servers.clusterset(*args) as (_port, proc):
        time.sleep(0.3)
        log = servers.server_log(proc)
    assert re.search(r"read 2 cluster folder\(s\) in \d+\.\ds: 5 exports, 5 services", log), log
    assert "clusterset zone only; default policy local-first)" in log, log
    assert re.search(r"zone: first load: 3 services, \d+ names, .* member2 \(from --cluster\)", log)


def test_resolve_short_and_json_render_json(tmp_path: Path) -> None:
    flags = ["--manifests", str(ROOT / "examples" / "clusters"), "--cluster", "member2",
             "--state-file", str(tmp_path / "alloc.json")]  # fmt: skip
    srv = "_postgres._tcp.db.data.svc.clusterset.local"
    short = clusterset("resolve", srv, "SRV", *flags, "--short")
    assert short.returncode == 0, short.stderr
    targets = sorted(line.split()[3] for line in short.stdout.splitlines())
    assert targets == ["db-0.member1.db.data.svc.clusterset.local.",
                       "db-0.member2.db.data.svc.clusterset.local.",
                       "db-1.member1.db.data.svc.clusterset.local."], short.stdout  # fmt: skip
    out = clusterset("resolve", "serve.default.svc.clusterset.local", *flags, "-o", "json",
                     "--explain")  # fmt: skip
    got = json.loads(out.stdout)
    assert got["rcode"] == "NOERROR" and [r["type"] for r in got["answer"]] == ["A"], got
    assert got["explain"][0] == "name form: service", got["explain"]
    rendered = json.loads(clusterset("render", *flags, "-o", "json").stdout)
    assert rendered["kind"] == "List" and rendered["apiVersion"] == "v1"
    kinds = {item["kind"] for item in rendered["items"]}
    assert {"ServiceImport", "Service", "EndpointSlice"} <= kinds, kinds


def test_status_selects_by_exported_labels(tmp_path: Path) -> None:
    root = tmp_path / "clusters"
    shutil.copytree(ROOT / "examples" / "clusters", root)
    (root / "member1" / "tiered.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: tiered, namespace: default}\n"
        "spec: {clusterIP: 10.96.12.99, ports: [{name: http, port: 80}]}\n---\n"
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\n"
        "metadata: {name: tiered, namespace: default}\nspec: {exportedLabels: {tier: web}}\n"
    )
    state = ["--state-file", str(tmp_path / "alloc.json")]
    out = clusterset("status", "--manifests", str(root), "-l", "tier=web", "-o", "name", *state)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "member1/serviceexport/default/tiered",
        "member1/serviceimport/default/tiered", "member2/serviceimport/default/tiered",
    ]  # fmt: skip
    out = clusterset("status", "--manifests", str(root), "-l", "!tier", "-o", "name", *state)
    assert "tiered" not in out.stdout and "default/web" in out.stdout, out.stdout
    assert "-l 'tier in web': cannot read" in one_line(
        clusterset("status", "--manifests", str(root), "-l", "tier in web")
    )


def test_status_watch_prints_again_on_a_change(tmp_path: Path) -> None:
    root = tmp_path / "clusters"
    shutil.copytree(ROOT / "examples" / "clusters", root)
    last = "member2/serviceimport/default/web\n"  # the last line of a look at the examples
    with subprocess.Popen(
        [sys.executable, "-m", "clusterset", "status", "--manifests", str(root), "-o", "name",
         "-w", "--state-file", str(tmp_path / "alloc.json")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as proc:  # fmt: skip

        def look() -> list[str]:
            assert proc.stdout is not None
            lines = [proc.stdout.readline()]
            while lines[-1] not in (last, ""):
                lines.append(proc.stdout.readline())
            return lines

        try:
            assert "member1/serviceexport/default/serve\n" in look()
            (root / "member1" / "serve.yaml").unlink()
            second = look()
            assert second[0] == "\n" and second[-1] == last, second  # a new look, blank line first
            assert not [line for line in second if "default/serve" in line], second
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=20)
            finally:
                proc.kill()  # never left behind, whatever failed
        assert code == 130  # Ctrl-C, as kubectl get -w


def test_status_jsonpath(tmp_path: Path) -> None:
    flags = ["--manifests", str(ROOT / "examples" / "clusters"), "-n", "data",
             "--state-file", str(tmp_path / "alloc.json")]  # fmt: skip
    out = clusterset("status", *flags, "-o", "jsonpath={.exports[*].cluster}")
    assert out.returncode == 0 and out.stdout == "member1 member2", (out.stdout, out.stderr)
    line = one_line(clusterset("status", *flags, "-o", "jsonpath={range .exports[*]}{end}"))
    assert "not supported (fields, [n] and [*] are)" in line, line


def test_resolve_explains_a_forwarded_name_too(tmp_path: Path) -> None:
    out = clusterset("resolve", "kubernetes.default.svc.cluster.local", "--manifests",
                     str(ROOT / "examples" / "clusters"), "--cluster", "member2",
                     "--unified-cluster-local", "--explain",
                     "--state-file", str(tmp_path / "a.json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "forwarded to the upstream cluster DNS" in out.stdout
    assert out.stdout.rstrip().endswith("of no imported service: clusterset forwards it upstream")


def test_a_big_first_read_draws_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """stderr a terminal (a pty): the bar, with files read of files found; stderr a pipe
    (logs): no bar, the start-up lines only."""
    root = tmp_path / "clusters"
    (root / "member1").mkdir(parents=True)
    for i in range(600):
        (root / "member1" / f"s{i}.yaml").write_text(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default}}\n"
            f"spec: {{clusterIP: 10.96.{i // 250}.{i % 250 + 1}, ports: [{{port: 80}}]}}\n"
        )
    args = [sys.executable, "-m", "clusterset", "status", "--manifests", str(root),
            "--state-file", str(tmp_path / "a.json"), "-o", "name"]  # fmt: skip
    primary, secondary = pty.openpty()
    with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=secondary) as proc:
        os.close(secondary)
        drawn = b""
        with contextlib.suppress(OSError):  # EIO once the process is gone
            while chunk := os.read(primary, 65536):
                drawn += chunk
        assert proc.wait(timeout=60) == 0
    os.close(primary)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode(errors="replace"))  # no colours
    assert "reading manifests" in text and "600/600 files" in text, text[-500:]
    piped = clusterset("status", "--manifests", str(root), "--state-file",
                       str(tmp_path / "a.json"), "-o", "name")  # fmt: skip
    assert "reading manifests" not in piped.stderr
