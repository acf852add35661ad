#!/usr/bin/env bash
# Build the real peers the integration tests run against, from the Go module
# proxy only:
#   kube-apiserver  k8s.io/kubernetes (the control plane, with etcd from Debian)
#   kubelet kube-proxy kube-controller-manager kube-scheduler kubectl
#                   k8s.io/kubernetes, in the same `go build` as kube-apiserver (shared
#                   compile), for the fleet tier's real nodes (not with --without-fleet)
#   containerd ctr containerd-shim-runc-v2
#                   github.com/containerd/containerd/v2 (the nodes' runtime; runc is Debian's)
#   bridge host-local loopback portmap
#                   github.com/containernetworking/plugins (the nodes' CNI plugins, in
#                   $CACHE/cni/bin)
#   coredns         github.com/coredns/coredns (stock build, kubernetes plugin)
#   helm            helm.sh/helm/v3 (only with --with-helm)
#   mcs-conformance.test  sigs.k8s.io/mcs-api/conformance, the mcs-api conformance
#                   suite as a Ginkgo test binary, from ../shared/third_party
#                   (scripts/build-mcs-conformance.sh; not with --without-mcs-conformance)
#   karmada-*       Karmada v1.18.2's aggregated-apiserver, controller-manager, scheduler
#                   and webhook, from ../shared/third_party (scripts/build-karmada.sh;
#                   not with --without-karmada)
#
# Binaries go to ${CLUSTERSET_CACHE:-$HOME/.cache/clusterset}/bin/, each with a
# <name>.version stamp; a binary whose stamp matches is not rebuilt. Go's own
# module and build caches stay at their default places (outside the repo), so
# a second build after a version bump is fast. Never commit these binaries.
#
# Usage: scripts/build-peers.sh [--with-helm] [--without-mcs-conformance] [--without-karmada]
#                               [--without-fleet] [--force]
# Env:   K8S_VERSION, COREDNS_VERSION, HELM_VERSION, CONTAINERD_VERSION, CNI_VERSION,
#        CLUSTERSET_CACHE, GO,
#        MCS_CONFORMANCE_VERSION (see scripts/build-mcs-conformance.sh)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
CNI_VERSION="${CNI_VERSION:-v1.10.0}"

CACHE="${CLUSTERSET_CACHE:-$HOME/.cache/clusterset}"
BIN="$CACHE/bin"
SRC="$CACHE/src"

with_helm=0
with_mcs_conformance=1
with_karmada=1
with_fleet=1
force=0
for arg in "$@"; do
    case "$arg" in
        --with-helm) with_helm=1 ;;
        --without-mcs-conformance) with_mcs_conformance=0 ;;
        --without-karmada) with_karmada=0 ;;
        --without-fleet) with_fleet=0 ;;
        --force) force=1 ;;
        -h | --help)
            sed -n '2,31p' "$0"
            exit 0
            ;;
        *)
            echo "build-peers: unknown argument: $arg" >&2
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
        echo "build-peers: no Go toolchain found (set GO=/path/to/go)" >&2
        exit 1
    fi
fi

export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -buildvcs=false"
LDFLAGS_BASE="-s -w"

mkdir -p "$BIN" "$SRC"

log() { printf '[build-peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# stamp_ok NAME WANT: the binary exists, runs, and its stamp says WANT.
stamp_ok() {
    local name="$1" want="$2"
    [[ "$force" == 0 && -x "$BIN/$name" && -f "$BIN/$name.version" ]] &&
        [[ "$(cat "$BIN/$name.version")" == "$want" ]]
}

# timed NAME CMD...: run CMD, print its wall time.
timed() {
    local name="$1" start end
    shift
    start=$(date +%s)
    "$@"
    end=$(date +%s)
    log "$name built in $((end - start)) s"
}

# build_kube NAME...: the Kubernetes commands NAME (kube-apiserver from the wrapper's main.go,
# the others from k8s.io/kubernetes/cmd/NAME) in one `go build`, so their packages compile once.
build_kube() {
    local stamp="k8s.io/kubernetes $K8S_VERSION"
    local todo=() name
    for name in "$@"; do
        stamp_ok "$name" "$stamp" || todo+=("$name")
    done
    if [[ ${#todo[@]} -eq 0 ]]; then
        log "$* $K8S_VERSION are up to date"
        return
    fi
    local ver="$K8S_VERSION"
    local minor_ver="v0.${ver#v1.}" # v1.37.2 -> v0.37.2
    local major minor
    major="$(cut -d. -f1 <<<"${ver#v}")"
    minor="$(cut -d. -f2 <<<"${ver#v}")"
    local dir="$SRC/kube-apiserver"
    mkdir -p "$dir"
    rm -f "$dir/go.mod" "$dir/main.go" # go.sum stays: it only saves look-ups

    log "kube-apiserver $ver: reading the tag's go.mod"
    local gomod
    gomod="$("$GO" mod download -json "k8s.io/kubernetes@$ver" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    if [[ -z "$gomod" || ! -f "$gomod" ]]; then
        echo "build-peers: could not download k8s.io/kubernetes@$ver" >&2
        exit 1
    fi
    local go_directive
    go_directive="$(awk '$1 == "go" { print $2; exit }' "$gomod")"

    # Staging modules: replaced with a local ./staging path in the tag's own
    # go.mod; only those the tag also requires matter to the module graph.
    local staging=()
    mapfile -t staging < <(
        awk '
            /^replace[[:space:]]*\(/ { inblock = 1; next }
            inblock && /^\)/ { inblock = 0; next }
            {
                line = $0
                if (!inblock) { if (line !~ /^replace[[:space:]]/) next; sub(/^replace[[:space:]]+/, "", line) }
                n = split(line, f, /[[:space:]]+/)
                for (i = 1; i <= n; i++) if (f[i] == "=>" && f[i + 1] ~ /^\.\/staging\//) { mod = (f[1] == "" ? f[2] : f[1]); print mod }
            }' "$gomod" | sort -u
    )
    if [[ ${#staging[@]} -eq 0 ]]; then
        echo "build-peers: no staging replace block found in $gomod" >&2
        exit 1
    fi
    local required
    required="$(awk '/^require[[:space:]]*\(/ { b = 1; next } b && /^\)/ { b = 0 } b { print $1 } /^require[[:space:]]+[^(]/ { print $2 }' "$gomod")"

    {
        echo "module clusterset.invalid/peers/kube-apiserver"
        echo
        echo "go $go_directive"
        echo
        echo "require k8s.io/kubernetes $ver"
        echo
        echo "replace ("
        local mod
        for mod in "${staging[@]}"; do
            if grep -qxF "$mod" <<<"$required"; then
                echo "	$mod => $mod $minor_ver"
            fi
        done
        echo ")"
    } >"$dir/go.mod"

    cat >"$dir/main.go" <<'EOF'
// Command kube-apiserver is the upstream kube-apiserver, built from the module proxy.
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones, as upstream

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
EOF

    local build_date
    build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local ldflags="$LDFLAGS_BASE"
    local pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
    done

    local pkgs=()
    for name in "${todo[@]}"; do
        if [[ "$name" == kube-apiserver ]]; then pkgs+=(.); else pkgs+=("k8s.io/kubernetes/cmd/$name"); fi
    done
    log "${todo[*]} $ver: building (staging modules at $minor_ver)"
    local out="$SRC/kube-out"
    rm -rf "$out"
    mkdir -p "$out"
    (cd "$dir" && "$GO" build -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}")
    for name in "${todo[@]}"; do
        mv -f "$out/$name" "$BIN/$name"
        printf '%s\n' "$stamp" >"$BIN/$name.version"
    done
    rmdir "$out"
}

# go_install_many DEST VERSION MODULE TAGS PKG...: `go install PKG@VERSION` for every PKG (one
# module) into DEST, stamped like the other peers.
go_install_many() {
    local dest="$1" ver="$2" module="$3" tags="$4"
    shift 4
    local stamp="$module $ver" todo=() pkg
    for pkg in "$@"; do
        local name
        name="$(basename "$pkg")"
        [[ "$force" == 0 && -x "$dest/$name" && "$(cat "$dest/$name.version" 2>/dev/null)" == "$stamp" ]] ||
            todo+=("$pkg@$ver")
    done
    if [[ ${#todo[@]} -eq 0 ]]; then
        log "$module $ver is up to date"
        return
    fi
    local tmp="$SRC/$(basename "$module")-gobin"
    rm -rf "$tmp"
    mkdir -p "$tmp" "$dest"
    log "$module $ver: go install ${#todo[@]} commands"
    GOFLAGS="-buildvcs=false" GOBIN="$tmp" \
        "$GO" install -trimpath -tags "$tags" -ldflags "$LDFLAGS_BASE" "${todo[@]}"
    for pkg in "${todo[@]}"; do
        local name
        name="$(basename "${pkg%@*}")"
        mv -f "$tmp/$name" "$dest/$name"
        printf '%s\n' "$stamp" >"$dest/$name.version"
    done
    rmdir "$tmp" 2>/dev/null || true
}

# go_install NAME MODULE/PKG VERSION: `go install pkg@version` into $BIN.
go_install() {
    local name="$1" pkg="$2" ver="$3" module="$4"
    local stamp="$module $ver"
    if stamp_ok "$name" "$stamp"; then
        log "$name $ver is up to date"
        return
    fi
    local tmp="$SRC/$name-gobin"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    log "$name $ver: go install $pkg@$ver"
    # `go install pkg@version` runs outside any module: -mod must not be set.
    GOFLAGS="-buildvcs=false" GOBIN="$tmp" \
        "$GO" install -trimpath -ldflags "$LDFLAGS_BASE" "$pkg@$ver"
    mv -f "$tmp/$(basename "$pkg")" "$BIN/$name"
    rmdir "$tmp" 2>/dev/null || true
    printf '%s\n' "$stamp" >"$BIN/$name.version"
}

total_start=$(date +%s)
log "go: $("$GO" version | cut -d' ' -f3-); cache: $BIN"
kube=(kube-apiserver)
if [[ "$with_fleet" == 1 ]]; then
    kube+=(kubelet kube-proxy kube-controller-manager kube-scheduler kubectl)
fi
timed kubernetes build_kube "${kube[@]}"
if [[ "$with_fleet" == 1 ]]; then
    timed containerd go_install_many "$BIN" "$CONTAINERD_VERSION" github.com/containerd/containerd/v2 \
        "no_btrfs no_devmapper no_zfs" github.com/containerd/containerd/v2/cmd/{containerd,ctr,containerd-shim-runc-v2}
    timed cni go_install_many "$CACHE/cni/bin" "$CNI_VERSION" github.com/containernetworking/plugins "" \
        github.com/containernetworking/plugins/plugins/{main/bridge,ipam/host-local,main/loopback,meta/portmap}
fi
timed coredns go_install coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns
if [[ "$with_helm" == 1 ]]; then
    timed helm go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" helm.sh/helm/v3
fi
extra_args=()
[[ "$force" == 1 ]] && extra_args+=(--force)
if [[ "$with_mcs_conformance" == 1 ]]; then
    GO="$GO" "$(dirname "$0")/build-mcs-conformance.sh" "${extra_args[@]}"
fi
if [[ "$with_karmada" == 1 ]]; then
    GO="$GO" "$(dirname "$0")/build-karmada.sh" "${extra_args[@]}"
fi
log "all peers ready in $(($(date +%s) - total_start)) s"
for f in "$BIN"/*.version; do
    printf '  %-22s %s\n' "$(basename "$f" .version)" "$(cat "$f")" >&2
done
