"""benchmarks/rsna_1500.py in quick mode on the real rsna-1500 images: it prepares them, trains both methods on
one label draw, evaluates on test once and writes the table."""

import csv
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "rsna-1500"
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.skipif(not (SOURCE / "labels.csv").is_file(), reason="../shared/data/rsna-1500 is absent")
def test_quick_run_writes_one_comparison(tmp_path):
    import rsna_1500

    rows = rsna_1500.main(["--quick", "--out", str(tmp_path)])
    assert sorted(r["method"] for r in rows) == ["adgm", "supervised"]
    with open(tmp_path / "rsna_1500.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert {r["task"] for r in written} == {"2class"}
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in written)
    for row in written:  # each run also scored on its own unlabelled images, against their hidden labels
        unlabelled = json.loads((Path(row["run_dir"]) / "evaluation-unlabelled.json").read_text())
        assert unlabelled["split"] == "unlabelled" and float(row["unlabelled_accuracy"]) == unlabelled["accuracy"]
    table = (tmp_path / "rsna_1500.md").read_text()
    assert "| 2class | 5 | adgm | 1 |" in table and "| 2class | 5 | supervised | 1 |" in table
    # rerun: the finished runs are read back, not trained again
    again = rsna_1500.main(["--quick", "--out", str(tmp_path)])
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]
