"""The container image, built by scripts/build-image and run the way the chart runs it.

The base is made here from Debian packages (`--base debian`: bookworm's python3.11 via
mmdebstrap; the registry of python:3.11-slim is not reachable from CI); the Dockerfile is the
one users build on python:3.11-slim. The container runs under runc with the OCI spec
containerd writes for the chart's securityContext (tests/image/runtime.py says what is
emulated), in a network namespace of its own where ports below 1024 are privileged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import eventually
from tests.image.runtime import Obj, capabilities, oci_spec, runc, write_bundle

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CLUSTERSET_CACHE", Path.home() / ".cache" / "clusterset"))
STORAGE = CACHE / "image" / "storage"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# examples/clusters, as the README's demo answers it.
NAME, ADDRESS = "serve.default.svc.clusterset.local", "10.250.184.216"
# The unpacked image on the Debian-made base measured 195 MB (python3.11 129 MB, the venv 60).
MAX_IMAGE_BYTES = 230_000_000
COMPONENT = "app.kubernetes.io/component"
# `setcap cap_net_bind_service=+ep`: VFS_CAP_REVISION_2 | effective, permitted = 1 << 10.
NET_BIND_SERVICE_FCAP = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]

if os.geteuid() != 0 or not all(shutil.which(t) for t in ("buildah", "runc", "ip", "dig")):
    pytest.skip(
        "the image tier needs root, buildah, runc, ip and dig (scripts/test installs them)",
        allow_module_level=True,
    )


def buildah(*args: str) -> str:
    cmd = ["buildah", "--storage-driver", "vfs", "--root", f"{STORAGE}/root"]
    cmd += ["--runroot", f"{STORAGE}/run", *args]
    done = subprocess.run(cmd, text=True, capture_output=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"
    return done.stdout


def deployment(manifest: str, component: str) -> Obj:
    """The rendered Deployment of `component` in deploy/manifests/<manifest>."""
    for doc in yaml.safe_load_all((ROOT / "deploy" / "manifests" / manifest).read_text()):
        labels = (doc or {}).get("metadata", {}).get("labels", {})
        if doc and doc["kind"] == "Deployment" and labels.get(COMPONENT) == component:
            return dict(doc)
    raise AssertionError(f"no {component} Deployment in deploy/manifests/{manifest}")


@pytest.fixture(scope="module")
def image() -> str:
    """The chart's default image reference, built by scripts/build-image (cached by its inputs)."""
    dns = deployment("clusterset.yaml", "dns")
    ref = str(dns["spec"]["template"]["spec"]["containers"][0]["image"])
    assert ref == f"ghcr.io/clusterset/clusterset:{VERSION}"
    build_image("--tag", ref)
    return ref


def build_image(*args: str) -> None:
    """scripts/build-image on the Debian-made base, in the tier's own buildah storage."""
    cmd = [str(ROOT / "scripts/build-image"), "--base", "debian", "--storage", str(STORAGE)]
    done = subprocess.run([*cmd, *args], text=True, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def image_config(image: str) -> Obj:
    out = json.loads(buildah("inspect", "--type", "image", image))
    return dict(out["OCIv1"]["config"])


@pytest.fixture(scope="module")
def rootfs(image: str) -> Iterator[Path]:
    """The image's root filesystem (a working container's, never written: runc mounts it ro)."""
    ctr = buildah("from", "--pull=never", "-q", image).strip()
    try:
        yield Path(buildah("mount", ctr).strip())
    finally:
        buildah("rm", ctr)


@pytest.fixture
def netns() -> Iterator[Path]:
    name = f"cs-image-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "runc"


def in_netns(netns: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns.name, *cmd],
        text=True,
        capture_output=True,
        timeout=10,
        check=False,
    )


def dig(netns: Path, *opts: str) -> str | None:
    """dig's answer section for NAME A on port 53 of `netns`, if it answered NOERROR."""
    done = in_netns(
        netns, "dig", "@127.0.0.1", "-p", "53", "+norec", "+time=1", "+tries=1", *opts, NAME, "A"
    )
    if "status: NOERROR" not in done.stdout:
        return None
    assert re.search(r"flags: qr aa[ ;]", done.stdout), done.stdout
    return " ".join(re.findall(rf"^{re.escape(NAME)}\.\s+\d+\s+IN\s+A\s+(\S+)$", done.stdout, re.M))


def run_spec(
    rootfs: Path,
    image_config: Obj,
    pod: Obj,
    args: list[str],
    *,
    tmp_path: Path,
    netns: Path | None = None,
    binds: dict[str, Path] | None = None,
    container: Obj | None = None,
) -> Path:
    spec = oci_spec(
        rootfs=rootfs,
        image_config=image_config,
        pod_spec=pod,
        container=container or pod["containers"][0],
        args=args,
        netns=netns,
        binds=binds or {},
    )
    return write_bundle(tmp_path / f"bundle-{uuid.uuid4().hex[:6]}", spec)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def run_once(
    rootfs: Path, image_config: Obj, pod: Obj, args: list[str], *, tmp_path: Path, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run the image's entrypoint with `args` in `pod`'s first container, to completion."""
    bundle = run_spec(
        rootfs, image_config, pod, [*image_config["Entrypoint"], *args], tmp_path=tmp_path, **kw
    )
    cid = f"cs-{uuid.uuid4().hex[:8]}"
    state = tmp_path / "runc"
    try:
        return runc(state, "run", "--bundle", str(bundle), cid, timeout=60)
    finally:
        runc(state, "delete", "--force", cid)


@pytest.fixture
def member2_imports(image_config: Obj, rootfs: Path, tmp_path: Path) -> Path:
    """What the hub writes into member2 for examples/clusters, rendered by the image itself."""
    hub = deployment("hub.yaml", "controller")["spec"]["template"]["spec"]
    done = run_once(
        rootfs,
        image_config,
        hub,
        ["render", "--manifests=/examples", "--cluster=member2"],
        tmp_path=tmp_path,
        binds={"/examples": ROOT / "examples" / "clusters"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    folder = tmp_path / "member2"
    folder.mkdir()
    (folder / "imports.yaml").write_text(done.stdout)
    return folder


def test_dns_answers_dig_on_port_53_under_the_charts_security_context(
    image_config: Obj,
    rootfs: Path,
    netns: Path,
    state: Path,
    tmp_path: Path,
    member2_imports: Path,
) -> None:
    pod = deployment("clusterset.yaml", "dns")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # The chart's command line, with a folder of member2's ServiceImports and EndpointSlices
    # instead of a kubeconfig (no apiserver here, so no --ns-service either, which reads the
    # cluster's Services); the rest as rendered (--listen=0.0.0.0:53).
    args = [
        "--manifests=/examples" if a.startswith("--kubeconfig=") else a
        for a in container["args"]
        if not a.startswith("--ns-service=")
    ]
    assert "--listen=0.0.0.0:53" in args
    assert capabilities(container["securityContext"]) == ["CAP_NET_BIND_SERVICE"]
    # Port 53 is privileged in this namespace: the bind below needs the capability.
    sysctl = in_netns(netns, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")
    assert sysctl.stdout.strip() == "1024"
    bundle = run_spec(
        rootfs,
        image_config,
        pod,
        [*image_config["Entrypoint"], *args],
        tmp_path=tmp_path,
        netns=netns,
        binds={"/examples": member2_imports},
    )
    cid = f"cs-dns-{uuid.uuid4().hex[:6]}"
    log = (tmp_path / "dns.log").open("w+")
    proc = subprocess.Popen(
        ["runc", "--root", str(state), "run", "--bundle", str(bundle), cid],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def answered() -> str | None:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"container exited {proc.returncode}: {log.read()}")
            return dig(netns)

        assert eventually("an answer from the container on port 53", answered) == ADDRESS
        assert dig(netns, "+tcp") == ADDRESS
        # The pods run what the benchmarks measure: the C fast path, built in the image.
        log.seek(0)
        assert "udp loop: native" in log.read()
        # The kubelet's probes, as the chart configures them.
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            url = f"http://127.0.0.1:{ports[get['port']]}{get['path']}"
            code = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).status)"
            assert in_netns(netns, sys.executable, "-c", code, url).stdout.strip() == "200", url
        # The process really is what the chart asks for: uid/gid 65532, only
        # NET_BIND_SERVICE (bit 10) bounding, permitted and effective, no_new_privs.
        pid = json.loads(runc(state, "state", cid).stdout)["pid"]
        status = proc_status(pid)
        assert status["Uid"].split() == ["65532"] * 4
        assert status["Gid"].split() == ["65532"] * 4
        assert status["Groups"] == "65532"
        assert status["NoNewPrivs"] == "1"
        assert int(status["CapBnd"], 16) == int(status["CapPrm"], 16) == 1 << 10
        assert int(status["CapEff"], 16) == 1 << 10
        assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0
        # ... on a read-only root.
        root_opts = next(
            line.split()[5]
            for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            if line.split()[4] == "/"
        )
        assert "ro" in root_opts.split(","), root_opts
    finally:
        runc(state, "kill", cid, "TERM")
        try:
            proc.wait(timeout=30)
        finally:
            runc(state, "delete", "--force", cid)
            log.close()
    assert proc.returncode == 0


def test_without_net_bind_service_the_interpreter_cannot_even_start(
    image_config: Obj, rootfs: Path, tmp_path: Path
) -> None:
    """What docs/troubleshooting.md says of `capabilities: {drop: [ALL]}` alone."""
    pod = deployment("clusterset.yaml", "dns")["spec"]["template"]["spec"]
    container = json.loads(json.dumps(pod["containers"][0]))
    container["securityContext"]["capabilities"] = {"drop": ["ALL"]}
    done = run_once(
        rootfs, image_config, pod, ["--version"], tmp_path=tmp_path, container=container
    )
    assert done.returncode != 0
    assert "operation not permitted" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["controller", "--help"], "--karmada-kubeconfig", id="controller-help"),
        pytest.param(["--version"], VERSION, id="version"),
    ],
)
def test_controller_runs_from_the_image(
    image_config: Obj, rootfs: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    """The hub's Deployment (its securityContext) running the image's entrypoint."""
    pod = deployment("hub.yaml", "controller")["spec"]["template"]["spec"]
    done = run_once(rootfs, image_config, pod, args, tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert expected in done.stdout


def test_image_metadata(image_config: Obj) -> None:
    assert image_config["User"] == "65532:65532"
    assert image_config["Entrypoint"] == ["clusterset"]
    assert image_config["Cmd"] == ["--help"]
    assert set(image_config["ExposedPorts"]) == {"53/udp", "53/tcp", "9153/tcp"}
    labels = image_config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == "clusterset"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    env = dict(e.split("=", 1) for e in image_config["Env"])
    assert env["PATH"].startswith("/opt/clusterset/bin:")
    # Only the state directory under the chart's emptyDir at /tmp is ever written.
    assert env["XDG_STATE_HOME"] == "/tmp/state"
    assert not any(k.startswith("CLUSTERSET_") for k in env)


def inside(rootfs: Path, path: str) -> Path:
    """`path` resolved as the container sees it (absolute symlinks point into rootfs)."""
    p = rootfs
    for part in Path(path).parts[1:]:
        p = p / part
        hops = 0
        while p.is_symlink():
            target = os.readlink(p)
            p = rootfs / target.lstrip("/") if target.startswith("/") else p.parent / target
            hops += 1
            assert hops < 20, path
    return p


def test_image_contents(rootfs: Path) -> None:
    size = sum(f.lstat().st_size for f in rootfs.rglob("*") if f.is_file() and not f.is_symlink())
    assert size < MAX_IMAGE_BYTES, f"unpacked image {size / 1e6:.0f} MB"
    # No compiler, no installer, no caches, nothing of the build's secrets.
    for tool in ("gcc", "cc", "g++", "make", "setcap", "pip", "pip3"):
        assert not (rootfs / "usr/bin" / tool).exists(), tool
        assert not (rootfs / "opt/clusterset/bin" / tool).exists(), tool
    site = rootfs / "opt/clusterset/lib/python3.11/site-packages"
    assert (site / "clusterset").is_dir()
    assert list((site / "clusterset/server").glob("_fastudp.*.so")), "built in the build stage"
    for pkg in ("pip", "setuptools", "wheel"):
        assert not (site / pkg).exists(), pkg
    for leftover in ("root/.cache", "src", "etc/pip.conf", "run/secrets"):
        assert not (rootfs / leftover).exists(), leftover
    assert not list((rootfs / "var/lib/apt/lists").glob("*_Packages*"))
    assert not list((rootfs / "var/cache/apt").glob("*.bin"))
    # Exactly one file carries a capability: the interpreter the venv runs.
    interpreter = inside(rootfs, "/opt/clusterset/bin/python")
    with_caps = set()
    for f in rootfs.rglob("*"):
        if f.is_file() and not f.is_symlink():
            try:
                os.getxattr(f, "security.capability", follow_symlinks=False)
            except OSError:
                continue
            with_caps.add(f)
    assert with_caps == {interpreter}
    fcap: Any = os.getxattr(interpreter, "security.capability")
    assert fcap == NET_BIND_SERVICE_FCAP


def test_the_archive_users_load_keeps_the_file_capability(image: str, tmp_path: Path) -> None:
    """`--archive` (docker load, kind load image-archive; `buildah push` writes the same layers)
    carries the capability as a PAX xattr record: what a registry or a node gets."""
    archive = tmp_path / "image.tar"
    build_image("--tag", image, "--archive", str(archive))
    found = {}
    with tarfile.open(archive) as outer:
        (manifest,) = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest["RepoTags"] == [image]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as tar:
                for member in tar:
                    if member.name == "usr/bin/python3.11":
                        found[layer] = member.pax_headers.get("SCHILY.xattr.security.capability")
    # The interpreter's last version (the top layer) is the one with the capability.
    assert found[manifest["Layers"][-1]] == NET_BIND_SERVICE_FCAP.decode("latin-1")
