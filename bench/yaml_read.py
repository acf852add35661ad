"""A cold fleet read, file by file: PyYAML's C loader (the reader before issue 23 item 2)
beside fastyaml (serde_yaml through ryaml, used where it provably reads the same).

    .venv/bin/python bench/yaml_read.py [--members 2] [--services 2000] [--endpoints 10] [--runs 3]

Writes --members folders as `edit_latency.py --members` does (one file per service:
Service, EndpointSlice with --endpoints endpoints, ServiceExport; 20% headless), then, in
this process and alternating the two readers --runs times, times per file in CPU µs:
  parse     the documents out of the text (load._documents)
  file      what a parse worker does per file: read, parse, convert, pickle
            (load._parse_packed)
and checks that both readers give the same documents and the same model objects for every
file, and how many files fastyaml handed to PyYAML. Prints the quickest run of each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _synth

from clusterset.manifests import fastyaml, load


@contextmanager
def pyyaml_only() -> Iterator[None]:
    """The reader as it was: every text through PyYAML."""
    fast = fastyaml.documents
    fastyaml.documents = lambda text, max_depth: None  # type: ignore[assignment]
    try:
        yield
    finally:
        fastyaml.documents = fast  # type: ignore[assignment]


def per_file(files: list[str], fn: Callable[[str], Any]) -> float:
    """CPU µs per file of fn over every file."""
    started = time.process_time()
    for path in files:
        fn(path)
    return (time.process_time() - started) / len(files) * 1e6


def parse(path: str) -> list[Any]:
    return [doc for _i, doc, _p in load._documents(Path(path).read_text(encoding="utf-8"))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="clusterset-yaml-read-") as work:
        ids = list(range(args.services))
        for c in range(args.members):
            folder = Path(work) / f"member{c + 1}"
            _synth.write_member_folder(folder, f"member{c + 1}", c, ids, args.endpoints)
        files = sorted(str(p) for p in Path(work).glob("member*/*.yaml"))
        size = sum(Path(p).stat().st_size for p in files)
        declined = sum(
            fastyaml.documents(Path(p).read_text(encoding="utf-8"), load.MAX_DEPTH) is None
            for p in files
        )
        with pyyaml_only():
            before = [(parse(p), load._parse(p)) for p in files]
        after = [(parse(p), load._parse(p)) for p in files]
        differ = sum(a != b for a, b in zip(before, after, strict=True))
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.runs):
            for reader in ("PyYAML CSafeLoader", "fastyaml"):
                for phase, fn in (("parse", parse), ("file", load._parse_packed)):
                    if reader == "fastyaml":
                        took = per_file(files, fn)
                    else:
                        with pyyaml_only():
                            took = per_file(files, fn)
                    key = (reader, phase)
                    best[key] = min(best.get(key, took), took)
    print(time.strftime("%Y-%m-%d %H:%M %Z"), "-", _synth.machine())
    print(
        f"{len(files):,} files, {size / 2**20:.1f} MiB ({args.members} x {args.services} x "
        f"{args.endpoints}); quickest of {args.runs} runs, CPU µs per file"
    )
    print(f"{'reader':<20} {'parse':>8} {'file':>8}")
    for reader in ("PyYAML CSafeLoader", "fastyaml"):
        print(f"{reader:<20} {best[(reader, 'parse')]:>8.0f} {best[(reader, 'file')]:>8.0f}")
    old, new = best[("PyYAML CSafeLoader", "parse")], best[("fastyaml", "parse")]
    oldf, newf = best[("PyYAML CSafeLoader", "file")], best[("fastyaml", "file")]
    print(f"ratio PyYAML / fastyaml: parse {old / new:.2f}x, file {oldf / newf:.2f}x")
    print(f"files handed to PyYAML by fastyaml: {declined}; files read differently: {differ}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
