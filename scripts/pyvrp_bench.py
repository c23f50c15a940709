"""PyVRP on the same instances and time limit as `foodaid bench routing`, for comparison.

Usage: pyvrp_bench.py INSTANCES_DIR SECONDS [SEED]. Prints one JSON object shaped like
foodaid's: {"instances": [{"name", "set", "cost", "bks", "gap_pct", "feasible", "seconds"}],
"sets": {...}}. Solomon distances are counted exactly (PyVRP's "exact": thousandths), CVRPLIB
distances rounded to the nearest integer, as the best-known values are.
"""

import csv
import json
import pathlib
import sys
import time

import numpy
import vrplib
from pyvrp import solve
from pyvrp.read import _InstanceParser, _ProblemDataBuilder, ROUND_FUNCS
from pyvrp.stop import MaxRuntime


def best_known(root):
    out = {}
    for path in root.rglob("bks.csv"):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    out[row["instance"]] = float(row["bks"])
                except (KeyError, ValueError):
                    pass
    return out


def main():
    root, seconds = pathlib.Path(sys.argv[1]), float(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    bks = best_known(root)
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        if path.suffix == ".vrp":
            fmt, rounding, scale = "vrplib", "round", 1.0
            name = path.stem
            group = name.split("-")[0]
        elif "CUSTOMER" in text and "VEHICLE" in text:
            fmt, rounding, scale = "solomon", "exact", 1000.0
            name, group = path.stem, "Solomon"
        else:
            continue
        instance = vrplib.read_instance(path, instance_format=fmt)
        if fmt == "solomon":
            # In VRPLIB terms: the size, and the depot (node 1, the first row).
            instance["dimension"] = len(instance["demand"])
            instance["depot"] = numpy.array([0])
        data = _ProblemDataBuilder(_InstanceParser(instance, ROUND_FUNCS[rounding])).data()
        started = time.process_time()
        result = solve(data, stop=MaxRuntime(seconds), seed=seed, display=False)
        spent = time.process_time() - started
        cost = result.best.distance() / scale
        feasible = result.is_feasible()
        best = bks.get(name)
        gap = 100.0 * (cost - best) / best if best and feasible else None
        rows.append({"name": name, "set": group, "cost": cost, "bks": best, "gap_pct": gap,
                     "feasible": feasible, "seconds": spent})
    sets = {}
    for group in sorted({r["set"] for r in rows}):
        of = [r for r in rows if r["set"] == group]
        gaps = [r["gap_pct"] for r in of if r["gap_pct"] is not None]
        sets[group] = {"avg_gap_pct": sum(gaps) / len(gaps) if gaps else None, "count": len(of),
                       "infeasible": sum(1 for r in of if not r["feasible"])}
    print(json.dumps({"instances": rows, "sets": sets}))


if __name__ == "__main__":
    main()
