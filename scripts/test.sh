#!/usr/bin/env bash
# Set up, then run the whole test suite: unit tests and integration tests
# that start real Redis, Milvus and tritonserver processes on free loopback
# ports. Arguments go to pytest.
#
# ECRS_MOVIELENS_DIR names a MovieLens 100K folder for the tests on real data.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
venv=${ECRS_VENV:-$root/.venv}
cd "$root"
# The virtual environment's pytest, so that the tests import the package as
# installed, with ecrs.client and ecrs.export inside it.
exec "$venv/bin/pytest" "$@"
