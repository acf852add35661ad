"""Run the image's container as a Kubernetes node would: the image built by buildah, its root
filesystem given to runc (the OCI runtime under containerd and CRI-O) with the OCI spec that
containerd's CRI plugin writes for the chart's pod and container securityContext.

What is emulated, and what is not:
- capabilities: containerd computes one list (its defaults, minus `drop`, plus `add`; `drop:
  [ALL]`, all the chart uses, empties it) and writes it as the bounding, effective and
  permitted sets; the inheritable and ambient sets stay empty (containerd's WithCapabilities).
  runc then sets them on the process it execs as the pod's uid.
- allowPrivilegeEscalation: false → noNewPrivileges; readOnlyRootFilesystem → a read-only root;
  runAsUser/runAsGroup/fsGroup → uid, gid, supplementary group; an emptyDir → a tmpfs.
- containerd's default mounts, masked and read-only paths.
- Not emulated: the RuntimeDefault seccomp profile, cgroup limits, the pod's network (a network
  namespace of the test's own, loopback only).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

MASKED = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def capabilities(security_context: Obj) -> list[str]:
    """The one list containerd writes as bounding = effective = permitted: its defaults minus
    `drop`, plus `add`. Only `drop: [ALL]` is emulated (what the chart sets), which leaves `add`."""
    caps = security_context.get("capabilities") or {}
    assert [c.upper() for c in caps.get("drop") or []] == ["ALL"], caps
    return [f"CAP_{c.upper()}" for c in caps.get("add") or []]


def oci_spec(
    *,
    rootfs: Path,
    image_config: Obj,
    pod_spec: Obj,
    container: Obj,
    args: list[str],
    netns: Path | None,
    binds: dict[str, Path],
) -> Obj:
    """The OCI runtime spec for `container` of `pod_spec`, running `args` on the image."""
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    uid = int(sc.get("runAsUser", pod_sc.get("runAsUser", 0)))
    gid = int(sc.get("runAsGroup", pod_sc.get("runAsGroup", 0)))
    groups = [int(pod_sc["fsGroup"])] if "fsGroup" in pod_sc else []
    caps = capabilities(sc)
    # valueFrom (the Downward API) → a fixed value; only the names matter here.
    env = list(image_config.get("Env") or []) + [
        f"{e['name']}={e.get('value', 'clusterset-test')}" for e in container.get("env") or []
    ]
    mounts: list[Obj] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    mounts += [
        {
            "destination": vm["mountPath"],
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=65536k"],
        }
        for vm in container.get("volumeMounts") or []
        if "emptyDir" in volumes[vm["name"]]
    ]
    mounts += [
        {"destination": dest, "type": "bind", "source": str(src), "options": ["rbind", "ro"]}
        for dest, src in binds.items()
    ]
    namespaces: list[Obj] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    namespaces.append({"type": "network", **({"path": str(netns)} if netns else {})})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": args,
            "env": env,
            "cwd": image_config.get("WorkingDir") or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": sc.get("allowPrivilegeEscalation") is False,
        },
        "root": {"path": str(rootfs), "readonly": bool(sc.get("readOnlyRootFilesystem"))},
        "hostname": "clusterset-test",
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
        },
    }


def write_bundle(bundle: Path, spec: Obj) -> Path:
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    return bundle


def runc(state: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runc", "--root", str(state), *args], text=True, capture_output=True, **kwargs
    )
