#!/usr/bin/env bash
# Build the mcs-api conformance suite (Go module sigs.k8s.io/mcs-api/conformance,
# Ginkgo v2) into a test binary that tests/integration/test_mcs_conformance.py runs:
#
#   ${CLUSTERSET_CACHE:-$HOME/.cache/clusterset}/bin/mcs-conformance.test
#
# with a mcs-conformance.test.version stamp; a binary whose stamp matches is not
# rebuilt. Never commit it. The binary is built from a tiny wrapper module that requires
# the conformance module and runs its specs (the way implementations such as Cilium embed
# the suite).
#
# Source of the conformance module: the snapshot
# ../shared/third_party/mcs-api-conformance-$VERSION.tar.gz (the nested module is not
# tagged, so no module proxy serves it), unpacked under the cache and used through a
# `replace`. Its dependencies come from the Go module proxy, with sigs.k8s.io/mcs-api
# pinned at $VERSION in the wrapper (left alone, `go mod tidy` picks a newer one). Without
# the snapshot the script exits 3 ("not available here").
#
# Usage: scripts/build-mcs-conformance.sh [--force]
# Env:   MCS_CONFORMANCE_VERSION (default v0.5.0), MCS_CONFORMANCE_ARCHIVE, CLUSTERSET_CACHE, GO
set -euo pipefail

VERSION="${MCS_CONFORMANCE_VERSION:-v0.5.0}"
MODULE=sigs.k8s.io/mcs-api/conformance
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ARCHIVE="${MCS_CONFORMANCE_ARCHIVE:-$ROOT/../shared/third_party/mcs-api-conformance-$VERSION.tar.gz}"
CACHE="${CLUSTERSET_CACHE:-$HOME/.cache/clusterset}"
BIN="$CACHE/bin"
SRC="$CACHE/src"
NAME=mcs-conformance.test

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,20p' "$0"
            exit 0
            ;;
        *)
            echo "build-mcs-conformance: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

GO="${GO:-}"
if [[ -z "$GO" ]]; then
    if command -v go >/dev/null 2>&1; then
        GO="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    else
        echo "build-mcs-conformance: no Go toolchain found (set GO=/path/to/go)" >&2
        exit 1
    fi
fi

export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -buildvcs=false"

log() { printf '[build-mcs-conformance %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ! -f "$ARCHIVE" ]]; then
    echo "build-mcs-conformance: no snapshot of $MODULE at $ARCHIVE" >&2
    exit 3
fi
stamp="$MODULE $VERSION $(sha256sum "$ARCHIVE" | cut -d' ' -f1)"
if [[ "$force" == 0 && -x "$BIN/$NAME" && -f "$BIN/$NAME.version" &&
    "$(cat "$BIN/$NAME.version")" == "$stamp" ]]; then
    log "$NAME $VERSION is up to date"
    exit 0
fi

start=$(date +%s)
mkdir -p "$BIN" "$SRC"
dir="$SRC/mcs-conformance"
rm -rf "$dir"
mkdir -p "$dir/src"
tar -xzf "$ARCHIVE" -C "$dir/src" --strip-components=1
log "$MODULE $VERSION: from $(basename "$ARCHIVE")"

cat >"$dir/go.mod" <<EOF
module clusterset.invalid/peers/mcs-conformance

go 1.23.0

require (
	$MODULE $VERSION
	sigs.k8s.io/mcs-api $VERSION
)

replace $MODULE => ./src/conformance
EOF

# The suite's specs register themselves when the package is imported; its flags
# (--contexts, --dns-domain, --skip-verify-eps-managed-by, ...) are on the
# standard flag set, next to Ginkgo's --ginkgo.* flags.
cat >"$dir/conformance_test.go" <<'EOF'
// Package mcsconformance runs the mcs-api conformance suite.
package mcsconformance

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	_ "sigs.k8s.io/mcs-api/conformance"
)

func TestConformance(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "MCS API conformance")
}
EOF

log "$MODULE $VERSION: go test -c"
(cd "$dir" && "$GO" mod tidy)
(cd "$dir" && "$GO" test -c -trimpath -ldflags "-s -w" -o "$BIN/$NAME.tmp" .)
mv -f "$BIN/$NAME.tmp" "$BIN/$NAME"
printf '%s\n' "$stamp" >"$BIN/$NAME.version"
log "$NAME $VERSION built in $(($(date +%s) - start)) s: $BIN/$NAME"
