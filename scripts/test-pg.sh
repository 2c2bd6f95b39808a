#!/usr/bin/env bash
# The PostgreSQL + Redis tier: the same suite as `make test`, against a private PostgreSQL 15
# cluster (max_prepared_transactions > 0) and a private Redis, both started here and stopped
# on exit. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${SERVICES_DIR:-$PWD/var/services}"
bash scripts/services.sh start "$DIR"
trap 'bash scripts/services.sh stop "$DIR"' EXIT
set -a
# shellcheck source=/dev/null
source "$DIR/env.sh"
set +a
export SAGA_TEST_TIER=postgresql  # tests/tier_guard.py: a PostgreSQL-only test may not skip here
# A var/ of its own (static files, the run/ locks such as the read-your-writes wait slot), apart
# from the embedded tier's var/test-env, so that .ci/run can run both tiers at the same time.
export VAR_DIR="$PWD/var/test-pg"
.venv/bin/python -m pytest "$@"
