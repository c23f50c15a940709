#!/usr/bin/env bash
# The route planner against PyVRP, in one run, on the same instances and time limit:
#   scripts/bench-routing.sh [INSTANCES_DIR] [SECONDS]
# (defaults: ../shared/bench/instances, 1). Builds foodaid in release, installs PyVRP 0.14.1 from
# PyPI in a virtualenv under target/, runs both, and prints the average gap to the best-known
# solutions per set side by side, then per instance.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
dir=${1:-../shared/bench/instances}
seconds=${2:-1}
python3 -m venv --help >/dev/null 2>&1 || need_apt no-such-command python3-venv
venv=target/pyvrp-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import pyvrp" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "pyvrp==0.14.1"
fi
cargo build --release -p foodaid
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
./target/release/foodaid bench routing --instances "$dir" --time-limit "$seconds" --json >"$out/foodaid.json"
"$venv/bin/python" scripts/pyvrp_bench.py "$dir" "$seconds" >"$out/pyvrp.json"
python3 - "$out/foodaid.json" "$out/pyvrp.json" "$seconds" <<'PY'
import json, sys
ours, theirs, seconds = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
fmt = lambda g: "-" if g is None else f"{g:.3f} %"
print(f"average gap to best known, {seconds} s per instance")
print(f"{'set':<10}{'n':>4}  {'foodaid':>10}  {'PyVRP':>10}  infeasible (foodaid/PyVRP)")
for name in sorted(set(ours["sets"]) | set(theirs["sets"])):
    a, b = ours["sets"].get(name, {}), theirs["sets"].get(name, {})
    print(f"{name:<10}{a.get('count', 0):>4}  {fmt(a.get('avg_gap_pct')):>10}  {fmt(b.get('avg_gap_pct')):>10}"
          f"  {a.get('infeasible', '-')}/{b.get('infeasible', '-')}")
by_name = {r["name"]: r for r in theirs["instances"]}
print(f"\n{'instance':<14}{'bks':>10}  {'foodaid':>10} {'gap':>9}  {'PyVRP':>10} {'gap':>9}")
for r in ours["instances"]:
    t = by_name.get(r["name"], {})
    print(f"{r['name']:<14}{r['bks'] or 0:>10.2f}  {r['cost']:>10.2f} {fmt(r['gap_pct']):>9}"
          f"  {t.get('cost', 0):>10.2f} {fmt(t.get('gap_pct')):>9}")
PY
