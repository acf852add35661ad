# Sourced by scripts/demo and scripts/test: the project's venv and Debian peers, idempotent.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLUSTERSET_VENV:-$ROOT/.venv}"
export CLUSTERSET_CACHE="${CLUSTERSET_CACHE:-$HOME/.cache/clusterset}"

apt_install() {
  # Install the Debian packages whose commands are missing (as root; CI runs as root).
  local missing=()
  local pair cmd pkg
  for pair in "$@"; do
    cmd="${pair%%=*}"; pkg="${pair#*=}"
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_env() {
  # $1: pip extras ("" or "[test]")
  local stamp="$VENV/.installed$1"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT$1"
    touch "$stamp"
  fi
}
