"""Repro of a fixed problem (bench/README.md, problem 2): an edit made just after
`clusterset run` first answered was never picked up, because watchfiles.awatch started
only after the first full read. Since 9ecd4d7 the watcher starts first, and every attempt
should print "seen after …".

    .venv/bin/python bench/repros/watch_race.py
"""

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _synth
import edit_latency as el

for attempt in range(3):
    work = Path(tempfile.mkdtemp())
    root = work / "clusters"
    shutil.copytree(_synth.REPO / "examples" / "clusters", root)
    _synth.write_member_folder(root / "member1", "member1", 0, list(range(200)), 3)
    port = _synth.free_port()
    proc = subprocess.Popen(
        [str(_synth.CLUSTERSET), "run", "--manifests", str(root), "--cluster", "member2",
         "--listen", f"127.0.0.1:{port}", "--state-file", str(work / "s.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        while el.answer_set(sock, port) != el.EXPECT[el.OLD]:
            time.sleep(0.01)
        db = root / "member1" / "db.yaml"
        db.write_text(db.read_text().replace(f"[{el.OLD}]", f"[{el.NEW}]"))
        t0 = time.monotonic()
        seen = None
        while time.monotonic() - t0 < 8:
            if el.answer_set(sock, port) == el.EXPECT[el.NEW]:
                seen = time.monotonic() - t0
                break
            time.sleep(0.02)
        print(
            f"attempt {attempt}: edit right after the first answer -> "
            + (f"seen after {seen:.2f}s" if seen else "NOT seen within 8 s")
        )
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
