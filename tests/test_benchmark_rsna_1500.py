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

    rows = rsna_1500.main(["--quick", "--likelihood-reduction", "mean", "--out", str(tmp_path)])
    assert sorted(r["method"] for r in rows) == ["adgm", "supervised"]
    with open(tmp_path / "rsna_1500.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert {r["task"] for r in written} == {"2class"}
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in written)
    for row in written:  # each run also scored on its own unlabelled images, against their hidden labels
        unlabelled = json.loads((Path(row["run_dir"]) / "evaluation-unlabelled.json").read_text())
        assert unlabelled["split"] == "unlabelled" and float(row["unlabelled_accuracy"]) == unlabelled["accuracy"]
        config = json.loads((Path(row["run_dir"]) / "config.json").read_text())["train"]
        assert config["likelihood_reduction"] == "mean" and config["warmup_epochs"] == 1.0  # the script's settings reach the run
    table = (tmp_path / "rsna_1500.md").read_text()
    assert "| 2class | 5 | adgm | 1 |" in table and "| 2class | 5 | supervised | 1 |" in table
    assert table.startswith("`python benchmarks/rsna_1500.py --likelihood-reduction mean --size 16")
    # rerun: the finished runs are read back, not trained again
    again = rsna_1500.main(["--quick", "--likelihood-reduction", "mean", "--out", str(tmp_path)])
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]


@pytest.mark.skipif(not (SOURCE / "labels.csv").is_file(), reason="../shared/data/rsna-1500 is absent")
def test_one_view_source_holds_that_view_alone(tmp_path):
    import rsna_1500
    from data_tools.rsna import read_labels

    with open(SOURCE / "labels.csv", newline="") as handle:
        views = {row["patientId"]: row["ViewPosition"] for row in csv.DictReader(handle)}
    folder = rsna_1500.one_view_source(SOURCE, tmp_path, "PA")
    images = {path.stem for path in (folder / "stage_2_train_images").iterdir()}
    expected = {patient for patient, view in views.items() if view == "PA"}
    assert images == expected and 0 < len(images) < len(views)
    labels = read_labels(folder / "stage_2_train_labels.csv", folder / "stage_2_detailed_class_info.csv")
    assert set(labels.classes) == expected  # every PA patient keeps its label rows, no other patient has any
    full = read_labels(SOURCE / "stage_2_train_labels.csv", SOURCE / "stage_2_detailed_class_info.csv")
    assert all(labels.classes[p] == full.classes[p] for p in expected)
    stamps = [(folder / name).stat().st_mtime_ns for name in ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv")]
    assert rsna_1500.one_view_source(SOURCE, tmp_path, "PA") == folder  # a second call leaves the files alone
    assert stamps == [(folder / name).stat().st_mtime_ns for name in ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv")]
