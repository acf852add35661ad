"""YAML fuzz of the manifest reader, long form (the short form runs in pytest:
tests/stress/test_yaml_fuzz.py).

    .venv/bin/python bench/yaml_fuzz.py [--cases 100000] [--seed N]

Feeds generated files (wrong types, mutated YAML, alias/merge-key bombs, deep nesting,
huge scalars, tags, non-UTF-8; tests/stress/yaml_gen.py) one at a time to the manifest
reader of a ROOT that also holds good objects, reconciling and compiling a zone every
25 cases. Prints cases, bad-object lines, the slowest case, peak RSS and any failure
(an exception, a multi-line error, more lines than objects, a good object lost).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stress.yaml_gen import fuzz


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=time.time_ns() % 1_000_000)
    args = ap.parse_args()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clusterset-yaml-fuzz-") as work:
        report = fuzz(Path(work), cases=args.cases, seed=args.seed)
    took = time.perf_counter() - started
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"seed {args.seed}: {report.cases} cases in {took:.1f}s, {report.bad_lines} bad-object lines"
    )
    print(f"by generator: {dict(sorted(report.by_generator.items()))}")
    print(f"slowest case: {report.slowest * 1000:.1f} ms ({report.slowest_generator})")
    print(f"peak RSS: {rss0:.0f} MB before, {rss1:.0f} MB after")
    print(f"failures: {len(report.failures)}")
    for f in report.failures[:20]:
        print(f"  {f}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
