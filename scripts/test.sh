#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test of the workspace (unit,
# given/when/then domain tests, integration tests against real nats-servers), then the web app
# end to end in Debian's headless Chromium against a real `foodaid up --demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt nats-server nats-server
need_apt chromium chromium
need_apt node nodejs
need_apt npm npm
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary, node one more).
passed=$(grep -E '^test result:' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | awk '{s += $6} END {print s + 0}')

# The web app: playwright-core (pinned in tests/e2e/package-lock.json) drives /usr/bin/chromium;
# screenshots of every screen at phone and tablet width land in target/e2e/screenshots.
cargo build --locked -p foodaid
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
set +e
(cd tests/e2e && npm test --silent) 2>&1 | tee "$log"
e2e=${PIPESTATUS[0]}
set -e
e2e_passed=$(grep -E '^# pass ' "$log" | awk '{print $3 + 0}')
e2e_failed=$(grep -E '^# fail ' "$log" | awk '{print $3 + 0}')
echo "tests: $((passed + ${e2e_passed:-0})) passed, $((failed + ${e2e_failed:-0})) failed" \
     "(browser: ${e2e_passed:-0} passed, ${e2e_failed:-0} failed; screenshots in target/e2e/screenshots)"
[ "$status" = 0 ] && [ "$e2e" = 0 ]
