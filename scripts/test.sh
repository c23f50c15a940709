#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test of the workspace
# (unit, given/when/then domain tests, and integration tests against real nats-servers).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt nats-server nats-server
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
