#!/usr/bin/env bash
# Release the FractalOps API and worker images: a thin shim over the driver, no logic here.
#   ./ops/containers/fractalops/release.sh [runtime options]   build, push, print image_ref=… lines
#   ./ops/containers/fractalops/release.sh promote api=<ref> worker=<ref>   promote without rebuilding
# Guards: FRACTALOPS_ALLOW_LOCAL_RUNTIME_RELEASE=1 outside CI; FRACTALOPS_RUNTIME_RELEASE_UPDATE_GITOPS=0 for a smoke build.
set -euo pipefail
# Bash builtins only (no dirname, no subshell): this runs before every release.
source=${BASH_SOURCE[0]}
if [ -L "$source" ]; then
  source=$(readlink -f "$source")  # started through a symlink: find the real checkout
fi
here=${source%/*}
[ "$here" != "$source" ] || here=.
caller=$PWD
cd -P "$here/../../.."  # -P: a symlinked folder on the way resolves to the real checkout
root=$PWD
# Relative paths in the arguments stay relative to where the command was typed.
cd "$caller"
python=python3
if [ -x "$root/.venv/bin/python" ]; then
  python="$root/.venv/bin/python"
fi
export FRACTALOPS_REPO_ROOT="$root"
# -P: never import a `release` folder that happens to sit in the caller's directory.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
command=runtime
if [ "${1:-}" = "promote" ]; then
  command=promote
  shift
fi
exec "$python" -P -m release "$command" "$@"
