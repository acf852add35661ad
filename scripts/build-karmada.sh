#!/usr/bin/env bash
# Build a real Karmada control plane for the tests, from the source snapshot in
# ../shared/third_party (the Go module proxy here does not serve Karmada):
#
#   karmada-aggregated-apiserver  cmd/aggregated-apiserver (cluster.karmada.io, cluster proxy)
#   karmada-controller-manager    cmd/controller-manager (MCS, binding, work, status controllers)
#   karmada-scheduler             cmd/scheduler (places PropagationPolicies)
#   karmada-webhook               cmd/webhook (policy mutation: ServiceImport dependencies)
#
# into ${CLUSTERSET_CACHE:-$HOME/.cache/clusterset}/bin with a karmada.version stamp (the
# archive's sha256): a matching stamp is not rebuilt. The source is unpacked under the
# cache too (never into the repo); it carries vendor/, so the build is offline. The four
# share one `go build` invocation and Go's build cache. The tests also read the CRDs from
# the unpacked tree (charts/karmada/_crds): its path is written to bin/karmada.src.
#
# Usage: scripts/build-karmada.sh [--force]
# Env:   KARMADA_ARCHIVE (default ../shared/third_party/karmada-v1.18.2.tar.gz), CLUSTERSET_CACHE, GO
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ARCHIVE="${KARMADA_ARCHIVE:-$ROOT/../shared/third_party/karmada-v1.18.2.tar.gz}"
CACHE="${CLUSTERSET_CACHE:-$HOME/.cache/clusterset}"
BIN="$CACHE/bin"
SRC="$CACHE/src"
COMPONENTS=(aggregated-apiserver controller-manager scheduler webhook)

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build-karmada: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { printf '[build-karmada %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ! -f "$ARCHIVE" ]]; then
    echo "build-karmada: no Karmada source archive at $ARCHIVE (set KARMADA_ARCHIVE)" >&2
    exit 3
fi
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

stamp="$(sha256sum "$ARCHIVE" | cut -d' ' -f1)"
up_to_date=1
for c in "${COMPONENTS[@]}"; do
    [[ -x "$BIN/karmada-$c" ]] || up_to_date=0
done
if [[ "$force" == 0 && "$up_to_date" == 1 && -f "$BIN/karmada.version" &&
    "$(cat "$BIN/karmada.version")" == "$stamp" && -d "$(cat "$BIN/karmada.src" 2>/dev/null)" ]]; then
    log "karmada is up to date ($(basename "$ARCHIVE"))"
    exit 0
fi

start=$(date +%s)
mkdir -p "$BIN" "$SRC"
dir="$SRC/karmada"
rm -rf "$dir"
mkdir -p "$dir"
log "unpacking $(basename "$ARCHIVE")"
tar -xzf "$ARCHIVE" -C "$dir" --strip-components=1
log "go build ${COMPONENTS[*]} (-mod=vendor)"
out="$SRC/karmada-out"
rm -rf "$out"
mkdir -p "$out"
pkgs=()
for c in "${COMPONENTS[@]}"; do pkgs+=("./cmd/$c"); done
(cd "$dir" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=vendor -buildvcs=false" \
    "$GO" build -trimpath -ldflags "-s -w" -tags kubernetes_protomessage_one_more_release \
    -o "$out/" "${pkgs[@]}")
for c in "${COMPONENTS[@]}"; do
    mv -f "$out/$c" "$BIN/karmada-$c"
done
rmdir "$out"
printf '%s\n' "$dir" >"$BIN/karmada.src"
printf '%s\n' "$stamp" >"$BIN/karmada.version"
log "karmada built in $(($(date +%s) - start)) s: ${COMPONENTS[*]/#/$BIN/karmada-}"
