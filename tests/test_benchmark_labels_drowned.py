"""benchmarks/labels_drowned.py for one epoch: each asked setting's row, with shares that sum to 1, and its table."""

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_one_epoch_writes_a_row_per_setting(tmp_path):
    import labels_drowned

    rows = labels_drowned.main(["--settings", "defaults", "supervised", "--epochs", "1", "--out", str(tmp_path)])
    assert [r["setting"] for r in rows] == ["defaults", "supervised"]
    with open(tmp_path / "labels_drowned.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    for row in written:
        shares = [float(row[k]) for k in ("share_normal", "share_opacity", "share_not_normal")]
        assert abs(sum(shares) - 1) < 1e-9
        assert 0 <= float(row["train_accuracy"]) <= 1
    table = (tmp_path / "labels_drowned.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| defaults |") and table[3].startswith("| supervised |")
