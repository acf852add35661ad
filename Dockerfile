# syntax=docker/dockerfile:1
# clusterset: `clusterset controller` (hub) and `clusterset dns` (member) in one image.
#
#   docker build -t ghcr.io/clusterset/clusterset:0.1.0 .
#   docker run --rm ghcr.io/clusterset/clusterset:0.1.0 --help
#   scripts/build-image            (the same with buildah, where there is no Docker)
#
# Runs as uid/gid 65532 (nonroot). Port 53 is bound without root: the interpreter carries the
# file capability cap_net_bind_service=+ep (as CoreDNS's image does with its binary). The
# runtime (containerd, CRI-O: capabilities drop ALL, add NET_BIND_SERVICE) puts that
# capability in the bounding, permitted and effective sets of the process it starts as uid
# 65532, and an exec keeps it only through a file capability. allowPrivilegeEscalation: false
# (no_new_privs) lets exec keep no capability the process did not already hold, and this one
# it held: so the chart's securityContext works (tests/image runs it under runc, as containerd
# would). A container that drops NET_BIND_SERVICE too cannot exec the interpreter at all
# ("operation not permitted"), whatever the command.

ARG PYTHON_IMAGE=python:3.11-slim
# The same Python with a C compiler and its headers: the build stage compiles the UDP fast
# path (_fastudp); the compiler stays out of the runtime image.
ARG BUILD_IMAGE=python:3.11

# --- build: the project and its pinned dependencies, installed into a venv ----------------
FROM ${BUILD_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/clusterset
# The only step that downloads: the dependencies and the build backend, read from
# pyproject.toml, so that this layer survives source edits. Behind a TLS-intercepting proxy,
# pass a pip.conf (and the CA bundle it names) as build secrets, as scripts/build-image does;
# without them (docker build) nothing is mounted.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.crt,target=/run/secrets/ca.crt \
    /opt/clusterset/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print(*p["project"]["dependencies"], *p["build-system"]["requires"], sep="\n")' >requirements.txt \
 && /opt/clusterset/bin/pip install -r requirements.txt
# Then the package itself (offline); pip and the build backend leave the venv once it is filled.
COPY README.md setup.py ./
COPY src ./src
# The extension is optional for pip (no compiler: the Python loop); here it must be built.
RUN /opt/clusterset/bin/pip install --no-deps --no-build-isolation --no-index . \
 && /opt/clusterset/bin/python -c 'import clusterset.server._fastudp' \
 && /opt/clusterset/bin/python -m pip uninstall -q -y pip setuptools wheel \
 && /opt/clusterset/bin/python -m compileall -q /opt/clusterset/lib \
 && /opt/clusterset/bin/clusterset --version

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="clusterset" \
      org.opencontainers.image.description="KEP-1645 Multi-Cluster Services controller and clusterset.local DNS server" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/clusterset/clusterset"

# The file capability is the xattr `setcap cap_net_bind_service=+ep` writes
# (VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, permitted = 1 << CAP_NET_BIND_SERVICE), set
# here without installing libcap2-bin; on the interpreter the venv below runs.
RUN set -eux; \
    python3 -c 'import os, shutil, struct; os.setxattr(os.path.realpath(shutil.which("python3")), "security.capability", struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0))'; \
    groupadd --system --gid 65532 nonroot; \
    useradd --system --no-log-init --uid 65532 --gid 65532 --home-dir /home/nonroot --create-home \
      --shell /usr/sbin/nologin nonroot

COPY --from=build /opt/clusterset /opt/clusterset

# Not CLUSTERSET_*: every such variable is read as a flag (CLUSTERSET_<COMMAND>_<FLAG>).
ENV PATH=/opt/clusterset/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/nonroot \
    XDG_STATE_HOME=/tmp/state

USER 65532:65532
WORKDIR /home/nonroot
# DNS (UDP and TCP) and /metrics, /health, /ready.
EXPOSE 53/udp 53/tcp 9153
ENTRYPOINT ["clusterset"]
CMD ["--help"]
