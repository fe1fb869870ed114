#!/usr/bin/env bash
# The test command: install everything the tests need (system packages included), then run
# ruff, mypy, the topology policy check and the whole pytest suite, integration tests included.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

log() { printf '== %s\n' "$*" >&2; }

if ! command -v git >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  log "installing git and python3-venv from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git python3-venv >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
log "installing the project and its test tools into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'


log "ruff"
.venv/bin/ruff check release tests bench
.venv/bin/ruff format --check release tests bench
log "mypy"
.venv/bin/mypy
log "topology check"
.venv/bin/fractalops-release topology check

log "pytest"
exec .venv/bin/python -m pytest -m "" "$@"  # everything, the devstack tests included
