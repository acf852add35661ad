# syntax=docker/dockerfile:1
# clusterset: `clusterset controller` (hub) and `clusterset dns` (member) in one image.
#
#   docker build -t ghcr.io/clusterset/clusterset:0.1.0 .
#   docker run --rm ghcr.io/clusterset/clusterset:0.1.0 --help
#
# Runs as uid/gid 65532 (nonroot). Port 53 is bound without root: the interpreter carries the
# file capability cap_net_bind_service (as CoreDNS's image does with its binary), which takes
# effect when the container keeps NET_BIND_SERVICE in its bounding set (the Helm chart:
# capabilities drop ALL, add NET_BIND_SERVICE; it works with allowPrivilegeEscalation: false).
# A container that drops NET_BIND_SERVICE too cannot exec the interpreter at all
# ("operation not permitted"), whatever the command.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a wheel of the project and every dependency, installed into a venv -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/clusterset
# Dependencies first (a layer that survives source edits), then the package itself.
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/clusterset/bin/pip install . \
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

# setcap comes from libcap2-bin, which is removed again in the same layer.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends libcap2-bin; \
    setcap cap_net_bind_service=+ep "$(readlink -f /usr/local/bin/python3.11)"; \
    apt-get purge -y --auto-remove libcap2-bin; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 65532 nonroot; \
    useradd --system --uid 65532 --gid 65532 --home-dir /home/nonroot --create-home \
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
