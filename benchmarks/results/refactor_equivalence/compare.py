"""Compare the metrics.csv of a run before and after the trainer's refactor: every numeric column but the time.

    python benchmarks/results/refactor_equivalence/compare.py BEFORE.csv AFTER.csv [BEFORE.csv AFTER.csv ...]

Prints, per pair, the largest absolute difference of each column and overall, and exits 1 if one exceeds 1e-6.
"""

import csv
import math
import sys

TIME_COLUMNS = {"seconds"}
TOLERANCE = 1e-6


def numbers(cell: str) -> list[float]:
    return [float(part) for part in cell.split()]  # class_prior holds one number per class


def compare(before_path: str, after_path: str) -> float:
    with open(before_path, newline="") as a, open(after_path, newline="") as b:
        before, after = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert len(before) == len(after), f"{before_path}: {len(before)} rows, {after_path}: {len(after)}"
    assert list(before[0]) == list(after[0]), "the columns differ"
    worst = 0.0
    print(f"{before_path} vs {after_path} ({len(before)} epochs)")
    for column in before[0]:
        if column in TIME_COLUMNS:
            continue
        diffs = [abs(x - y) if not (math.isnan(x) and math.isnan(y)) else 0.0
                 for r, s in zip(before, after) for x, y in zip(numbers(r[column]), numbers(s[column]), strict=True)]
        worst = max(worst, max(diffs))
        print(f"  {column:<24} max |before - after| = {max(diffs):.3g}")
    print(f"  overall max abs difference: {worst:.3g}")
    return worst


if __name__ == "__main__":
    paths = sys.argv[1:]
    worst = max(compare(paths[i], paths[i + 1]) for i in range(0, len(paths), 2))
    print(f"largest difference over all runs: {worst:.3g} ({'within' if worst <= TOLERANCE else 'OVER'} {TOLERANCE:g})")
    sys.exit(0 if worst <= TOLERANCE else 1)
