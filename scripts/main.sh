#!/usr/bin/env bash
# The main job on a fresh machine: set up, then generate data, train, export,
# start the servers, load the stores and print recommendations.
#
#   scripts/main.sh                          generated shop data
#   scripts/main.sh --movielens DIR          MovieLens 100K from DIR
#
# Other arguments go to 'ecrs main' (see 'ecrs main --help'); ECRS_STATE_DIR
# moves the state folder (default: .ecrs in the repository).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
venv=${ECRS_VENV:-$root/.venv}
export ECRS_STATE_DIR=${ECRS_STATE_DIR:-$root/.ecrs}
exec "$venv/bin/ecrs" main "$@"
