#!/usr/bin/env bash
# The main job on a fresh machine: install the toolkit and the local build stack, validate the topology,
# then run a smoke release of the api and worker images through the stack (GitOps untouched).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

log() { printf '== %s\n' "$*" >&2; }

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  log "installing python3-venv from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
log "installing the toolkit into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e .

log "validating the production topology and its policy"
.venv/bin/fractalops-release topology check
.venv/bin/fractalops-release topology render-env --format shell >&2

log "starting the local build stack (installs the engine, buildx and registries on first use)"
# Captured first: `eval "$(…)"` would hide a failed `up` from `set -e` and go on without a stack.
exports=$(.venv/bin/fractalops-release devstack up)
eval "$exports"

log "smoke release through the stack (FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS=0)"
FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE=1 \
FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS=0 \
  ./ops/containers/fractalops/release.sh "$@"

log "what each registry now holds (the base image came through the pull-through mirror)"
.venv/bin/fractalops-release devstack status >&2
