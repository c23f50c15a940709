#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test of the workspace
# (unit, given/when/then domain tests, and integration tests against real nats-servers).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt nats-server nats-server
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace (cargo prints one per test binary).
passed=$(grep -E '^test result:' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | awk '{s += $6} END {print s + 0}')
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
