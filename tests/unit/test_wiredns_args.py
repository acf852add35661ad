"""wire-dns addresses: what --server/--probe accept, and the `forward` target they become."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clusterset.cli.wiredns import parse_address
from clusterset.wiredns.corefile import forward_target


@pytest.mark.parametrize(
    ("value", "parsed", "target"),
    [
        ("10.96.0.53", ("10.96.0.53", 53), "10.96.0.53"),
        ("10.96.0.53:5300", ("10.96.0.53", 5300), "10.96.0.53:5300"),
        ("fd00::53", ("fd00::53", 53), "fd00::53"),
        ("[fd00::53]:5300", ("fd00::53", 5300), "[fd00::53]:5300"),
    ],
)
def test_addresses(value: str, parsed: tuple[str, int], target: str) -> None:
    assert parse_address(value) == parsed
    assert forward_target(*parsed) == target


@pytest.mark.parametrize("value", ["10.96.0.535", "dns.example", "10.96.0.53:0", "[fd00::53]:x"])
def test_bad_server_is_exit_2_before_anything_is_read(value: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    kubeconfig = tmp_path / "k"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    r = subprocess.run(
        [sys.executable, "-m", "clusterset", "wire-dns", "--kubeconfig", str(kubeconfig), "--server", value],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == f"clusterset: error: --server {value!r}: expected IP[:PORT]"


def test_an_unreachable_apiserver_is_one_line_and_exit_1(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.servers import free_port

    kubeconfig = tmp_path / "k"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "clusterset", "wire-dns", "--kubeconfig", str(kubeconfig), "--server", "10.96.0.53"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stdout.startswith("wire-dns: c: the API call failed: ConnectError")
