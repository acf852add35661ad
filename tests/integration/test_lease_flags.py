"""Lease timing flags that cannot work are refused at start: one line, exit 2
(issue 11 items 16 and 19)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def clusterset(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clusterset", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(
            ("dns", "--lease-grace", "5"),
            "--lease-grace 5: shorter than the hub's renewal interval (10s",
            id="grace-below-the-renewal-interval",
        ),
        pytest.param(
            ("dns", "--lease-grace", "3", "--source-lease-duration", "16"),
            "--lease-grace 3: shorter than the hub's renewal interval (4s",
            id="grace-below-a-custom-interval",
        ),
        pytest.param(
            ("controller", "--kubeconfig", "K", "--leader-elect-renew-deadline", "20"),
            "--leader-elect-lease-duration (15s) must be greater than",
            id="renew-deadline-not-below-lease",
        ),
        pytest.param(
            ("controller", "--kubeconfig", "K", "--leader-elect-retry-period", "9"),
            "--leader-elect-renew-deadline (10s) must be greater than 1.2 x",
            id="retry-period-too-long",
        ),
        pytest.param(
            ("controller", "--kubeconfig", "K", "--source-lease-duration", "0"),
            "--source-lease-duration 0: expected at least 1",
            id="no-source-lease-duration",
        ),
    ],
)
def test_impossible_lease_timing_is_one_line_and_exit_2(
    args: tuple[str, ...], says: str, tmp_path: Path
) -> None:
    args = tuple(str(tmp_path / "kubeconfig") if a == "K" else a for a in args)
    if args[0] == "dns":
        args = (*args, "--manifests", str(tmp_path))
    out = clusterset(*args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and says in out.stderr, out.stderr
