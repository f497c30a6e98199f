#!/usr/bin/env bash
# Prepare this machine for ECRS: Debian packages (redis-server, libb64 for
# perf_analyzer), a virtual environment in .venv with ECRS and its
# dependencies installed. Safe to run again; it only adds what is missing.
#
# Environment: PYTHON picks the interpreter (CPython 3.10 or 3.11),
# ECRS_VENV the virtual environment folder.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${ECRS_VENV:-$root/.venv}

log() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

is_supported_python() {
  "$1" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 10), (3, 11)))' >/dev/null 2>&1
}

pick_python() {
  local candidate
  if [ -n "${PYTHON:-}" ]; then
    # An interpreter set in PYTHON is used or rejected, never replaced by another.
    is_supported_python "$PYTHON" || fail "PYTHON=$PYTHON does not run as CPython 3.10 or 3.11; set PYTHON to such an interpreter's path"
    command -v "$PYTHON"
    return 0
  fi
  for candidate in python3.11 python3.10 python3; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    if is_supported_python "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  fail "no CPython 3.10 or 3.11 found; install one (apt-get install python3.11) or set PYTHON"
}

install_debian_packages() {
  local python=$1 version missing=()
  version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  dpkg -s libb64-0d >/dev/null 2>&1 || missing+=(libb64-0d)
  # Debian's own interpreter needs its venv module and the shared libpython
  # that Triton's Python backend stub links.
  if [ "$(dirname "$python")" = /usr/bin ]; then
    dpkg -s "python${version}-venv" >/dev/null 2>&1 || missing+=("python${version}-venv")
    dpkg -s "libpython${version}" >/dev/null 2>&1 || missing+=("libpython${version}")
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

python=$(pick_python) || exit 1
command -v apt-get >/dev/null 2>&1 || fail "apt-get not found; ECRS sets up Debian or Ubuntu machines"
install_debian_packages "$python"

if [ ! -x "$venv/bin/python" ]; then
  log "creating the virtual environment $venv with $python"
  "$python" -m venv "$venv"
else
  log "using the existing virtual environment $venv ($("$venv/bin/python" --version)); remove it to change the interpreter"
fi
log "installing ECRS and its dependencies into $venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "$root[local,test,report]"
# Reinstall the project itself even when its version number did not change.
"$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall "$root"
log "ready: $venv/bin/ecrs"
