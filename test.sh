#!/usr/bin/env bash
# The test command: installs build dependencies if missing, fetches the test models once into
# .cache/, runs every test of the workspace, then fuzzes each parser for a few seconds.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-deps.sh
scripts/fetch-fixtures.sh
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
scripts/fuzz.sh 5 || status=$?
exit "$status"
