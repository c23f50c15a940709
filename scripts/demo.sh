#!/usr/bin/env bash
# Runs foodaid with demo data on this machine: installs nats-server if missing, builds, and
# starts `foodaid up --demo` (HTTP on 127.0.0.1:8080 unless FOODAID__HTTP__ADDR says otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt nats-server nats-server
cargo build --release --locked -p foodaid
exec ./target/release/foodaid up --demo "$@"
