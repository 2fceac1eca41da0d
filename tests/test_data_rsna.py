"""`prepare rsna`: CSVs to one label per patient, bad input counted and reported, the real 16-image sample."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from data_helpers import (
    load_report,
    make_rsna_root,
    phantom,
    read_dataset,
    shared_data_or_skip,
    stored_values,
    write_dicom,
    write_rsna_csvs,
)

from cli.main import app
from data_tools.errors import InputError
from data_tools.imaging import prepare_image
from data_tools.rsna import RSNA_TASKS, prepare_rsna, read_labels


@pytest.fixture
def messy_root(tmp_path):
    """12 good images plus: one without a label, a duplicate patientId, a corrupt file, a class/Target
    disagreement, a patient with conflicting class rows, and two label patients without an image."""
    root = tmp_path / "rsna"
    labels = make_rsna_root(root, 12)
    images = root / "stage_2_train_images"
    write_dicom(images / "orphan.dcm", stored_values(phantom(48, 48), 8), jpeg=True)
    write_dicom(images / "sub" / "p00-00001.dcm", stored_values(phantom(48, 48), 8), jpeg=True)
    (images / "p00-00004.dcm").write_bytes(b"this is not a DICOM file" * 10)
    write_dicom(images / "disagree.dcm", stored_values(phantom(48, 48, seed=7), 8), jpeg=True)
    write_dicom(images / "conflict.dcm", stored_values(phantom(48, 48, seed=8), 8), jpeg=True)
    (images / "notes.txt").write_text("ignored")
    labels.update({"ghost-1": "Normal", "ghost-2": "Lung Opacity"})
    write_rsna_csvs(
        root,
        labels,
        extra_rows=[
            ("disagree", "Lung Opacity", 0),
            ("conflict", "Normal", 0),
            ("conflict", "No Lung Opacity / Not Normal", 0),
        ],
    )
    return root


def test_csvs_become_one_label_per_patient(tmp_path):
    labels = {"a": "Lung Opacity", "b": "Normal", "c": "No Lung Opacity / Not Normal"}
    write_rsna_csvs(tmp_path, labels, boxes=3, extra_rows=[("d", "Lung Opacity", 0)])
    read = read_labels(tmp_path / "stage_2_train_labels.csv", tmp_path / "stage_2_detailed_class_info.csv")
    assert read.classes == {**labels, "d": "Lung Opacity"}
    assert read.disagreements == [{"patient": "d", "class": "Lung Opacity", "target": [0]}]
    assert read.conflicting == [] and read.without_class_row == []


def test_messy_download_is_counted_and_reported(messy_root, tmp_path):
    out = tmp_path / "out"
    result = prepare_rsna(out, root=messy_root, size=32, workers=0, max_failure_fraction=0.5, seed=1)
    report = load_report(out)
    # found: 12 + orphan + duplicate + disagree + conflict = 16; left out: orphan, duplicate, corrupt, conflict
    assert report["images_found"] == 16 and report["images_prepared"] == 12 and result.n_images == 12
    assert report["failure_counts"] == {"duplicate": 1, "no-label-row": 2, "unreadable": 1}
    by_kind = {f["kind"]: f for f in report["failures"]}
    assert "p00-00004" in by_kind["unreadable"]["message"]
    assert by_kind["duplicate"]["id"] == "p00-00001"
    labels = report["labels"]
    assert labels["patients_without_image"] == {"count": 2, "patients": ["ghost-1", "ghost-2"]}
    assert labels["class_target_disagreements"]["patients"] == [
        {"patient": "disagree", "class": "Lung Opacity", "target": [0]}
    ]
    assert labels["conflicting_class_rows"]["count"] == 1
    assert report["ignored_files"] == 1 and report["image_formats"] == {"DICOM": 16} and report["warnings"] == []

    dataset = read_dataset(out)
    assert dataset.images.shape == (12, 32, 32) and dataset.images.dtype == np.uint8
    assert isinstance(dataset.images, np.memmap)
    ids = list(dataset.index.id)
    assert ids == sorted(ids) and "p00-00004" not in ids and "disagree" in ids
    # Rows are the right images, in index order, with no hole where the corrupt file was.
    for row in (0, 5, 11):
        path = messy_root / "stage_2_train_images" / f"{ids[row]}.dcm"
        np.testing.assert_array_equal(dataset.images[row], prepare_image(path, size=32)[0])
    meta = dataset.meta
    assert meta["tasks"] == RSNA_TASKS and meta["source"] == "rsna" and meta["format_version"] == 1
    assert meta["preprocessing"]["size"] == 32 and meta["counts"]["all"]["Lung Opacity"] == 4
    assert set(dataset.index.view) == {"AP", "PA"}
    labels3, names = dataset.task_labels("3class")
    assert names == ("normal", "opacity", "not-normal") and (labels3 >= 0).all()
    assert not (tmp_path / "out.partial").exists()


def test_too_many_failures_stop_with_a_clear_error(messy_root, tmp_path):
    # Failures known from the listing alone (no label, duplicate) stop the run before any decoding.
    with pytest.raises(InputError, match=r"3 of 16 images failed \(1 duplicate, 2 no-label-row\).*5% allowed"):
        prepare_rsna(tmp_path / "out", root=messy_root, size=32, workers=0)
    assert not (tmp_path / "out").exists()
    report = json.loads((tmp_path / "out.partial" / "report.json").read_text())
    assert report["images_failed"] == 3 and report["images_decoded_this_run"] == 0


def test_too_many_unreadable_images_stop_the_run(tmp_path):
    root = tmp_path / "rsna"
    make_rsna_root(root, 10)
    for name in ("p00-00002.dcm", "p00-00007.dcm"):
        (root / "stage_2_train_images" / name).write_bytes(b"\x00" * 50)
    with pytest.raises(InputError, match=r"2 of 10 images failed \(2 unreadable\).*p00-00002"):
        prepare_rsna(tmp_path / "out", root=root, size=16, workers=0, max_failure_fraction=0.1)
    assert not (tmp_path / "out").exists()
    # The same run with a higher limit carries on from the staging folder.
    result = prepare_rsna(tmp_path / "out", root=root, size=16, workers=0, max_failure_fraction=0.2)
    assert result.n_images == 8 and result.n_failed == 2 and result.decoded_this_run == 0


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda root: (root / "stage_2_train_labels.csv").rename(root / "labels.csv"),
            "stage_2_train_labels.csv: file not found",
        ),
        (
            lambda root: (root / "stage_2_detailed_class_info.csv").write_text(
                "patientId,label\np00-00000,Normal\n"
            ),
            "missing column.*class; found patientId, label",
        ),
        (
            lambda root: [p.unlink() for p in (root / "stage_2_train_images").glob("*.dcm")],
            "no image files",
        ),
        (
            lambda root: shutil.rmtree(root),
            "rsna: no such folder \\(expected the RSNA download folder",
        ),
    ],
    ids=["renamed-csv", "renamed-column", "empty-folder", "missing-root"],
)
def test_bad_layout_fails_before_any_work(tmp_path, damage, message):
    root = tmp_path / "rsna"
    make_rsna_root(root, 3)
    damage(root)
    with pytest.raises(InputError, match=message):
        prepare_rsna(tmp_path / "out", root=root, size=16, workers=0)
    assert not (tmp_path / "out.partial").exists() and not (tmp_path / "out").exists()


def test_paths_given_separately_and_worker_pool(tmp_path):
    root = tmp_path / "elsewhere"
    make_rsna_root(root, 9)
    images = root / "stage_2_train_images"
    moved = tmp_path / "images-elsewhere"
    images.rename(moved)
    result = prepare_rsna(
        tmp_path / "out",
        images_dir=moved,
        labels_csv=root / "stage_2_train_labels.csv",
        class_csv=root / "stage_2_detailed_class_info.csv",
        size=24,
        workers=2,
        square="pad",
    )
    reference = prepare_rsna(tmp_path / "ref", root=root, images_dir=moved, size=24, workers=0, square="pad")
    assert result.n_images == 9 and reference.n_images == 9
    np.testing.assert_array_equal(read_dataset(tmp_path / "out").images, read_dataset(tmp_path / "ref").images)


def test_cli_prepare_rsna(tmp_path):
    root = tmp_path / "rsna"
    make_rsna_root(root, 6)
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "rsna", "--root", str(root), "--out", str(tmp_path / "out"),
                                 "--size", "16", "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 6 images" in result.output
    (root / "stage_2_train_labels.csv").write_text("patientId,Tgt\n")
    result = runner.invoke(app, ["prepare", "rsna", "--root", str(root), "--out", str(tmp_path / "out2")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "Target" in result.output and "Traceback" not in result.output
    help_text = runner.invoke(app, ["prepare", "rsna", "--help"]).output
    assert "Example" in help_text and "pyro-adgm prepare rsna --root" in help_text


def test_real_rsna_sample(tmp_path):
    root = shared_data_or_skip("rsna")
    result = prepare_rsna(tmp_path / "out", root=root, size=225, workers=2)
    dataset = read_dataset(tmp_path / "out")
    assert dataset.images.shape == (16, 225, 225)
    assert dataset.meta["counts"]["all"] == {"Lung Opacity": 5, "No Lung Opacity / Not Normal": 7, "Normal": 4}
    assert sorted(dataset.index.view) == ["AP"] * 6 + ["PA"] * 10
    report = load_report(tmp_path / "out")
    assert report["labels"]["patients_without_image"]["count"] == 26668
    assert report["labels"]["patients_with_label"] == 26684
    assert report["labels"]["class_target_disagreements"]["count"] == 0
    assert result.n_failed == 0 and report["images_failed"] == 0
    labels2, names = dataset.task_labels("2class")
    assert names == ("normal", "abnormal") and list(np.bincount(labels2)) == [4, 12]
