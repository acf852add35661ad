"""YAML fuzz of the manifest reader, short form (issue 11): random documents, wrong types,
mutated text, alias and merge-key bombs, deep nesting, huge scalars, tags, non-UTF-8.

No exception, one short line per bad object, the good objects beside them kept, and
reconcile plus zone compile still work. Long form: `python bench/yaml_fuzz.py`.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from tests.stress.yaml_gen import fuzz

pytestmark = pytest.mark.timeout(120)
CASES = 400


def test_yaml_fuzz_short(tmp_path: Path) -> None:
    seed = int(os.environ.get("CLUSTERSET_STRESS_SEED", time.time_ns() % 1_000_000))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = fuzz(tmp_path, cases=CASES, seed=seed)
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert report.failures == [], f"seed {seed}: {report.failures[:5]}"
    assert report.cases == CASES and report.bad_lines > CASES // 2
    assert report.slowest < 2.0, (
        f"seed {seed}: {report.slowest_generator} took {report.slowest:.2f}s"
    )
    assert grew_mb < 300, f"seed {seed}: peak RSS grew {grew_mb:.0f} MB"
