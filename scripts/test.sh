#!/usr/bin/env bash
# Runs the test suite: installs what it needs (scripts/install-test-deps.sh),
# then `cargo test` with this script's arguments, from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-test-deps.sh
exec cargo test "$@"
