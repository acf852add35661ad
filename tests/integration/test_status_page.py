"""`status -o matrix` and `-o html`: the fleet as service x cluster, and the same as a
self-contained page that a real headless browser (Debian's chromium-headless-shell) renders:
its DOM is checked, and its screenshot shows each state's colour."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.integration.servers import ROOT, need

pytestmark = pytest.mark.integration

# The page's colours (output._CSS), as the screenshot must show them.
CONFLICT = (0xFF, 0xE1, 0xB3)
INVALID = (0xF8, 0xC8, 0xC8)
IMPORTED = (0xDD, 0xE8, 0xF8)


@pytest.fixture
def fleet_folder(tmp_path: Path) -> Path:
    """The seed folders (web conflicts), plus an export in member2 without its Service."""
    root = tmp_path / "clusters"
    shutil.copytree(ROOT / "examples" / "clusters", root)
    (root / "member2" / "ghost.yaml").write_text(
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n"
        "metadata: {name: ghost, namespace: default}\n"
    )
    return root


def status(root: Path, fmt: str, tmp: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "clusterset", "status", "--manifests", str(root), "-o", fmt,
         "--state-file", str(tmp / "alloc.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr  # the conflict and the invalid export are findings
    return out.stdout


def test_matrix_in_the_terminal(fleet_folder: Path, tmp_path: Path) -> None:
    lines = status(fleet_folder, "matrix", tmp_path).splitlines()
    assert lines[0].split() == ["SERVICE", "MEMBER1", "MEMBER2"]
    rows = {line.split()[0]: re.split(r"\s{3,}", line)[1:] for line in lines[1:]}
    assert rows["default/serve"] == ["exported, imported", "imported"]
    assert rows["default/web"] == ["conflict, imported", "conflict, imported"]
    assert rows["default/ghost"] == ["-", "invalid"]


def test_html_page_in_a_real_browser(fleet_folder: Path, tmp_path: Path) -> None:
    page = tmp_path / "fleet.html"
    page.write_text(status(fleet_folder, "html", tmp_path))
    text = page.read_text()
    # Self-contained: nothing to fetch, nothing to run.
    assert not re.search(r"(?i)<script|<link|src=|href=|@import|url\(", text), text
    browser = need("chromium-headless-shell")
    flags = ["--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    cell = re.compile(r'<td class="([^"]*)" data-cluster="([^"]*)">([^<]*)</td>')
    rows = {}
    for row in re.findall(r'<tr><th scope="row">([^<]*)</th>(.*?)</tr>', dom, re.S):
        rows[row[0]] = {c: (cls, label) for cls, c, label in cell.findall(row[1])}
    assert rows["default/web"]["member2"] == ("conflict imported", "conflict, imported"), rows
    assert rows["default/ghost"]["member2"] == ("invalid", "invalid"), rows
    assert rows["default/ghost"]["member1"] == ("none", "-"), rows
    assert rows["default/serve"]["member2"] == ("imported", "imported"), rows
    shot = tmp_path / "fleet.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1000,700",
                    page.as_uri()], capture_output=True, timeout=60, check=True)  # fmt: skip
    width, height, pixels = read_png(shot.read_bytes())
    assert (width, height) == (1000, 700)
    seen = set(pixels)
    for colour in (CONFLICT, INVALID, IMPORTED):
        assert colour in seen, f"{colour} not on the screenshot"
    print(f"status page: {len(text)} bytes, screenshot {shot} ({len(seen)} colours)")


def read_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit RGB or RGBA PNG (what chromium writes):
    enough of the format to look at a screenshot without an imaging library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    step = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * step
    prev, pixels, i = bytearray(stride), [], 0
    for _ in range(height):
        filt, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - step] if x >= step else 0
            b, c = prev[x], prev[x - step] if x >= step else 0
            if filt == 1:
                line[x] = (line[x] + a) & 0xFF
            elif filt == 2:
                line[x] = (line[x] + b) & 0xFF
            elif filt == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[x] = (line[x] + pred) & 0xFF
        pixels += [tuple(line[x : x + 3]) for x in range(0, stride, step)]
        prev = line
    return width, height, pixels  # type: ignore[return-value]
