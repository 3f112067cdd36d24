#!/usr/bin/env bash
# The test command: installs build dependencies if missing, fetches the test models once into
# .cache/, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-deps.sh
scripts/fetch-fixtures.sh
cargo test --workspace --no-fail-fast "$@"
