"""`prepare csv` on small CSVs written here in three layouts (plain, ChestX-ray14, CheXpert), naming real RSNA
images from ../shared/data/rsna-1500: patient-level splits, the split column, label mappings and findings,
unknown values, missing files, duplicates."""

import csv
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from data_helpers import load_report, read_dataset, shared_data_or_skip
from PIL import Image

from cli.main import app
from data_tools.csv_labels import parse_class_options
from data_tools.csv_source import CsvSpec, parse_where, prepare_csv
from data_tools.errors import InputError
from data_tools.imaging import prepare_image


@pytest.fixture(scope="module")
def rsna():
    """(image folder, [(patientId, class, view)] sorted by patientId) of the real 1,500-image set."""
    root = shared_data_or_skip("rsna-1500")
    with open(root / "labels.csv", newline="") as handle:
        rows = sorted((r["patientId"], r["class"], r["ViewPosition"]) for r in csv.DictReader(handle))
    return root / "stage_2_train_images", rows


def _write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _splits_by_patient(dataset):
    splits = {}
    for patient, split in zip(dataset.index.patient, dataset.index.split):
        splits.setdefault(patient, set()).add(split)
    return splits


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# plain: path,label[,patient][,split]


def test_plain_csv_splits_by_patient(rsna, tmp_path):
    images, rows = rsna
    normal = [r for r in rows if r[1] == "Normal"][:24]
    opacity = [r for r in rows if r[1] == "Lung Opacity"][:24]
    # 16 patients of 3 images each, 8 per class: every image of a patient has the patient's class.
    table = [(f"{pid}.png", cls, f"patient-{cls[0]}{k // 3}") for group in (normal, opacity)
             for k, (pid, cls, _) in enumerate(group)]  # fmt: skip
    labels = _write_csv(tmp_path / "labels.csv", ["path", "label", "patient"], table)
    result = prepare_csv(labels, tmp_path / "out", images=images, size=32, workers=0, val_fraction=0.25,
                         test_fraction=0.25, seed=3)  # fmt: skip
    dataset = read_dataset(tmp_path / "out")
    assert result.n_images == 48 and dataset.images.shape == (48, 32, 32)
    splits = _splits_by_patient(dataset)
    assert len(splits) == 16 and all(len(s) == 1 for s in splits.values())  # no patient in two splits
    per_split = {s: sum(1 for v in splits.values() if v == {s}) for s in ("train", "val", "test")}
    assert per_split == {"train": 8, "val": 4, "test": 4}  # 2 of each class's 8 patients in val, 2 in test
    assert dataset.meta["tasks"] == {"2class": {"Lung Opacity": ["Lung Opacity"], "Normal": ["Normal"]}}
    assert dataset.meta["csv"]["columns"] == {"path": "path", "patient": "patient", "split": None, "view": None}
    row = list(dataset.index.id).index(table[5][0])
    np.testing.assert_array_equal(dataset.images[row], prepare_image(images / table[5][0], size=32)[0])
    # Without the patient column every image is its own patient.
    prepare_csv(labels, tmp_path / "by-image", CsvSpec(patient_column=""), images=images, size=16, workers=0)
    assert list(read_dataset(tmp_path / "by-image").index.patient) == [t[0] for t in table]


def test_split_column_is_honoured(rsna, tmp_path):
    images, rows = rsna
    chosen = rows[:30]
    names = ["train", "VAL", "test", "valid", "train", ""]
    table = [(f"{pid}.png", cls, f"p{k // 2}", names[(k // 2) % 6]) for k, (pid, cls, _) in enumerate(chosen)]
    labels = _write_csv(tmp_path / "labels.csv", ["path", "label", "patient", "split"], table)
    prepare_csv(labels, tmp_path / "out", images=images, size=16, workers=0, test_fraction=0.3)
    dataset = read_dataset(tmp_path / "out")
    expected = {"train": "train", "VAL": "val", "valid": "val", "test": "test", "": "train"}
    got = dict(zip(dataset.index.id, dataset.index.split))
    assert got == {path: expected[split] for path, _, _, split in table}
    assert dataset.meta["splits"]["val_fraction"] == 0 and dataset.meta["splits"]["test_fraction"] == 0

    # A split the column never names (test) is drawn from its train rows, by patient; val rows stay val.
    no_test = [(p, c, pt, "train" if s == "test" else s) for p, c, pt, s in table]
    labels = _write_csv(tmp_path / "no-test.csv", ["path", "label", "patient", "split"], no_test)
    prepare_csv(labels, tmp_path / "drawn", images=images, size=16, workers=0, test_fraction=0.3)
    dataset = read_dataset(tmp_path / "drawn")
    got = dict(zip(dataset.index.id, dataset.index.split))
    assert all(got[p] == "val" for p, _, _, s in no_test if s in ("VAL", "valid"))
    assert {got[p] for p, _, _, s in no_test if s in ("train", "")} == {"train", "test"}
    assert all(len(s) == 1 for s in _splits_by_patient(dataset).values())


def test_a_patient_in_two_splits_is_refused(rsna, tmp_path):
    images, rows = rsna
    table = [(f"{rows[0][0]}.png", "a", "p1", "train"), (f"{rows[1][0]}.png", "b", "p1", "test")]
    labels = _write_csv(tmp_path / "labels.csv", ["path", "label", "patient", "split"], table)
    with pytest.raises(InputError, match=r"labels.csv: column 'split' puts 1 patient\(s\) in more than one split "
                                         r"\(first: p1 in test, train\)"):  # fmt: skip
        prepare_csv(labels, tmp_path / "out", images=images, size=16, workers=0)


def test_unknown_label_values_end_with_one_line(rsna, tmp_path):
    images, rows = rsna
    table = [(f"{pid}.png", cls) for pid, cls, _ in rows[:12]] + [(f"{rows[12][0]}.png", "Pneumothorax")]
    labels = _write_csv(tmp_path / "labels.csv", ["path", "label"], table)
    result = _invoke("prepare", "csv", "--csv", labels, "--images", images, "--out", tmp_path / "out",
                     "--class", "normal=Normal", "--class", "abnormal=Lung Opacity,No Lung Opacity / Not Normal")  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert f"{labels}: column 'label': unknown value(s) 'Pneumothorax' in 1 rows (first on line 14)" in lines[0]
    assert "'Normal', 'Lung Opacity', 'No Lung Opacity / Not Normal'" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    # A blank label is an unknown value too.
    labels = _write_csv(tmp_path / "blank.csv", ["path", "label"], table[:3] + [(f"{rows[20][0]}.png", "")])
    with pytest.raises(InputError, match=r"column 'label': unknown value\(s\) '' in 1 rows \(first on line 5\)"):
        prepare_csv(labels, tmp_path / "out", images=images, size=16, workers=0)


def test_missing_files_are_counted_and_listed(rsna, tmp_path):
    images, rows = rsna
    table = [(f"{pid}.png", cls) for pid, cls, _ in rows[:20]]
    table += [("not-here-1.png", "Normal"), ("sub/not-here-2.png", "Lung Opacity")]
    labels = _write_csv(tmp_path / "labels.csv", ["path", "label"], table)
    result = _invoke("prepare", "csv", "--csv", labels, "--images", images, "--out", tmp_path / "out", "--size", 16,
                     "--workers", 0, "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: 2 of 22 images named in labels.csv have no file under" in result.output
    assert "wrote 20 images" in result.output and "0 images left out" in result.output
    report = load_report(tmp_path / "out")
    assert report["images_without_file"] == {"count": 2, "paths": ["not-here-1.png", "sub/not-here-2.png"]}
    assert report["images_failed"] == 0 and report["csv"]["rows_read"] == 22
    # Nothing there at all: one line saying where the paths were looked for.
    with pytest.raises(InputError, match=rf"none of the 22 images of column 'path' is under {tmp_path} "
                                         rf"\(first: {tmp_path / table[0][0]}\); expected paths relative to --images"):  # fmt: skip
        prepare_csv(labels, tmp_path / "none", images=tmp_path, size=16, workers=0)


def test_rsna_csv_with_patient_ids_suffix_and_merged_box_rows(rsna, tmp_path):
    """RSNA's own class CSV (one row per box) through the plain reader: rows of one image merge."""
    images, rows = rsna
    root = shared_data_or_skip("rsna-1500")
    chosen = {pid for pid, _, _ in rows[:40]}
    with open(root / "stage_2_detailed_class_info.csv", newline="") as handle:
        subset = [(r["patientId"], r["class"]) for r in csv.DictReader(handle) if r["patientId"] in chosen]
    assert len(subset) > 40  # some patients have several boxes
    labels = _write_csv(tmp_path / "class_info.csv", ["patientId", "class"], subset)
    spec = CsvSpec(path_column="patientId", suffix=".png", label_column="class",
                   classes=parse_class_options(["normal=Normal", "opacity=Lung Opacity",
                                                "not-normal=No Lung Opacity / Not Normal"]))  # fmt: skip
    prepare_csv(labels, tmp_path / "out", spec, images=images, size=16, workers=0)
    dataset = read_dataset(tmp_path / "out")
    assert sorted(dataset.index.id) == sorted(chosen)
    assert load_report(tmp_path / "out")["csv"]["duplicate_rows_merged"] == len(subset) - 40
    assert set(dataset.meta["tasks"]) == {"2class", "3class"}
    assert dataset.meta["tasks"]["2class"] == {"normal": ["Normal"],
                                               "abnormal": ["Lung Opacity", "No Lung Opacity / Not Normal"]}  # fmt: skip
    expected = {pid: cls for pid, cls, _ in rows[:40]}
    assert dict(zip(dataset.index.id, dataset.index.class_name)) == expected


def test_disagreeing_duplicate_rows_are_failures(rsna, tmp_path):
    images, rows = rsna
    table = [(f"{pid}.png", "Normal") for pid, _, _ in rows[:30]] + [(f"{rows[0][0]}.png", "Lung Opacity")]
    labels = _write_csv(tmp_path / "labels.csv", ["path", "label"], table)
    result = prepare_csv(labels, tmp_path / "out", images=images, size=16, workers=0)
    report = load_report(tmp_path / "out")
    assert result.n_images == 29 and report["failure_counts"] == {"conflicting-labels": 1}
    assert "lines 2, 32" in report["failures"][0]["message"]


def test_rerun_is_a_no_op(rsna, tmp_path):
    images, rows = rsna
    labels = _write_csv(tmp_path / "labels.csv", ["path", "label"], [(f"{p}.png", c) for p, c, _ in rows[:8]])
    args = ["prepare", "csv", "--csv", labels, "--images", images, "--out", tmp_path / "out", "--size", 16,
            "--workers", 0, "--no-progress"]  # fmt: skip
    assert _invoke(*args).exit_code == 0
    stamp = (tmp_path / "out" / "images.npy").stat().st_mtime_ns
    output = _invoke(*args).output
    assert output.strip() == f"{tmp_path / 'out'}: already prepared with the same plan; nothing to do (--force rebuilds)"
    assert (tmp_path / "out" / "images.npy").stat().st_mtime_ns == stamp
    assert "8 decoded in this run" in _invoke(*args, "--force").output


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--class", "normal"], ["--class 'normal': expected NAME=VALUE"]),
        (["--class", "a=Normal", "--class", "b=Normal"], ["value 'Normal' is mapped to two classes, 'a' and 'b'"]),
        (["--path-column", "file"], ["no column 'file' (--path-column); found path, label"]),
        (["--split-column", "fold"], ["no column 'fold' (--split-column)"]),
        (["--uncertain", "positive"], ["--uncertain: only used with --finding"]),
        (["--finding", "Effusion"], ["--finding 'Effusion': not a column of the CSV"]),
        (["--layout", "chexpert"], ["the chexpert layout needs --finding"]),
        (["--layout", "chexpert", "--finding", "Edema"], ["no column 'Path' (--path-column), 'Edema' (--label-column/"]),
        (["--layout", "chestx-ray14"], ["the chestx-ray14 layout needs --finding"]),
        (["--where", "label"], ["--where 'label': expected COLUMN=VALUE"]),
        (["--where", "sex=F"], ["no column 'sex' (--where sex=...)"]),
        (["--patient-pattern", "("], ["--patient-pattern '(': not a regular expression"]),
    ],
)
def test_bad_options_end_with_one_line(rsna, tmp_path, extra, fragments):
    images, rows = rsna
    labels = _write_csv(tmp_path / "labels.csv", ["path", "label"], [(f"{p}.png", c) for p, c, _ in rows[:4]])
    result = _invoke("prepare", "csv", "--csv", labels, "--images", images, "--out", tmp_path / "out", *extra)
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_where_keeps_matching_rows(rsna, tmp_path):
    images, rows = rsna
    labels = _write_csv(tmp_path / "labels.csv", ["path", "label", "view"], [(f"{p}.png", c, v) for p, c, v in rows[:30]])
    spec = CsvSpec(where=parse_where(["view=PA"]))
    result = prepare_csv(labels, tmp_path / "out", spec, images=images, size=16, workers=0)
    dataset = read_dataset(tmp_path / "out")
    n_pa = sum(1 for r in rows[:30] if r[2] == "PA")
    assert result.n_images == n_pa and set(dataset.index.view) == {"PA"}
    assert load_report(tmp_path / "out")["csv"]["rows_filtered_out"] == 30 - n_pa


# ChestX-ray14: Data_Entry_2017.csv

CXR14_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", ""]  # fmt: skip
CXR14_FINDINGS = ["No Finding", "Effusion", "Effusion|Infiltration", "Atelectasis", "No Finding", "Cardiomegaly|Effusion",
                  "Infiltration", "Effusion", "No Finding", "Atelectasis|Infiltration", "Effusion", "No Finding"]  # fmt: skip


@pytest.fixture
def chestxray14(rsna, tmp_path):
    """A ChestX-ray14-like download: real images renamed as NIH names them, in two images_00N/images folders,
    24 rows of 8 patients (3 follow-ups each), and the Data_Entry_2017.csv header as shipped."""
    images, rows = rsna
    root = tmp_path / "nih"
    table = []
    for k, (pid, _, view) in enumerate(rows[100:124]):
        patient, follow_up = k // 3 + 1, k % 3
        name = f"{patient:08d}_{follow_up:03d}.png"
        folder = root / f"images_00{1 + k // 12}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(images / f"{pid}.png", folder / name)
        table.append([name, CXR14_FINDINGS[k % 12], follow_up, patient, 50 + k, "MF"[k % 2], view, 2500, 2048,
                      0.143, 0.143, ""])  # fmt: skip
    return root, _write_csv(root / "Data_Entry_2017.csv", CXR14_HEADER, table), table


def test_chestxray14_one_finding(chestxray14, tmp_path):
    root, entries, table = chestxray14
    result = _invoke("prepare", "csv", "--layout", "chestx-ray14", "--csv", entries, "--finding", "Effusion",
                     "--out", tmp_path / "out", "--size", 16, "--workers", 0, "--val-fraction", 0.25,
                     "--test-fraction", 0.25, "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    dataset = read_dataset(tmp_path / "out")
    effusion = {r[0] for r in table if "Effusion" in r[1].split("|")}
    assert dict(zip(dataset.index.id, dataset.index.class_name)) == {
        r[0]: "effusion" if r[0] in effusion else "no-effusion" for r in table}
    assert dataset.meta["tasks"] == {"2class": {"no-effusion": ["no-effusion"], "effusion": ["effusion"]}}
    assert dict(zip(dataset.index.id, dataset.index.patient)) == {r[0]: str(r[3]) for r in table}
    assert all(len(s) == 1 for s in _splits_by_patient(dataset).values())
    assert set(dataset.index.split) == {"train", "val", "test"}
    assert set(dataset.index.view) == {"AP", "PA"}
    # The images were found by name in images_001/images and images_002/images.
    row = list(dataset.index.id).index(table[20][0])
    np.testing.assert_array_equal(dataset.images[row],
                                  prepare_image(root / "images_002" / "images" / table[20][0], size=16)[0])  # fmt: skip


def test_chestxray14_multi_finding_and_negatives(chestxray14, tmp_path):
    root, entries, table = chestxray14
    spec = CsvSpec(layout="chestx-ray14", finding="Effusion", multi_finding="drop", negatives="no-finding")
    prepare_csv(entries, tmp_path / "out", spec, size=16, workers=0)
    dataset = read_dataset(tmp_path / "out")
    classes = dict(zip(dataset.index.id, dataset.index.class_name))
    assert classes == {r[0]: "effusion" if r[1] == "Effusion" else "no-finding"
                       for r in table if r[1] in ("Effusion", "No Finding")}  # fmt: skip
    left_out = load_report(tmp_path / "out")["csv"]["rows_left_out"]
    assert left_out == {"multi-finding": 4, "other-finding": 6}  # per 12 rows: Effusion|X twice, other findings 3 times

    spec = CsvSpec(layout="chestx-ray14", finding="No Finding")
    prepare_csv(entries, tmp_path / "normal", spec, size=16, workers=0)
    dataset = read_dataset(tmp_path / "normal")
    assert dataset.meta["tasks"] == {"2class": {"normal": ["normal"], "abnormal": ["abnormal"]}}
    assert sorted(dataset.meta["counts"]["all"].items()) == [("abnormal", 16), ("normal", 8)]


def test_chestxray14_unknown_finding_names_what_it_lists(chestxray14, tmp_path):
    root, entries, _ = chestxray14
    with pytest.raises(InputError, match=r"column 'Finding Labels' never lists the finding 'effusion' \(--finding\) "
                                         r"\(did you mean 'Effusion'\?\); it lists 'Atelectasis', "):  # fmt: skip
        prepare_csv(entries, tmp_path / "out", CsvSpec(layout="chestx-ray14", finding="effusion"), size=16, workers=0)


# CheXpert: train.csv, one column per finding

CHEXPERT_FINDINGS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                     "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                     "Fracture", "Support Devices"]  # fmt: skip
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS]
#: (Pleural Effusion, another finding's column or None, No Finding) per row, in turn.
CHEXPERT_CASES = [("1.0", None, ""), ("1.0", "Edema", ""), ("-1.0", None, ""), ("0.0", None, "1.0"),
                  ("", None, "1.0"), ("0.0", "Cardiomegaly", ""), ("", "Support Devices", "1.0"), ("-1.0", "Edema", "")]  # fmt: skip


@pytest.fixture
def chexpert(rsna, tmp_path):
    """A CheXpert-like download: CheXpert-v1.0-small/train.csv and real images re-encoded as JPEG in
    train/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg; 24 images of 6 patients."""
    images, rows = rsna
    base = tmp_path / "CheXpert-v1.0-small"
    table = []
    for k, (pid, _, view) in enumerate(rows[200:224]):
        patient, study, number = k // 4 + 1, (k % 4) // 2 + 1, k % 2 + 1
        kind = "lateral" if k % 6 == 5 else "frontal"
        relative = f"train/patient{patient:05d}/study{study}/view{number}_{kind}.jpg"
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.open(images / f"{pid}.png").convert("L").save(base / relative, quality=95)
        effusion, other, no_finding = CHEXPERT_CASES[k % len(CHEXPERT_CASES)]
        values = {name: "" for name in CHEXPERT_FINDINGS}
        values.update({"Pleural Effusion": effusion, "No Finding": no_finding})
        if other:
            values[other] = "1.0"
        table.append([f"CheXpert-v1.0-small/{relative}", "Female", 40 + k, kind.capitalize(),
                      "" if kind == "lateral" else view, *(values[name] for name in CHEXPERT_FINDINGS)])  # fmt: skip
    return base, _write_csv(base / "train.csv", CHEXPERT_HEADER, table), table


def _effusion_of(table, uncertain):
    """The expected class per path for --finding "Pleural Effusion" with this --uncertain choice."""
    classes = {}
    for row in table:
        value = row[CHEXPERT_HEADER.index("Pleural Effusion")]
        if value == "-1.0":
            if uncertain == "drop":
                continue
            value = "1.0" if uncertain == "positive" else "0.0"
        classes[row[0]] = "pleural-effusion" if value == "1.0" else "no-pleural-effusion"
    return classes


@pytest.mark.parametrize("uncertain", ["drop", "positive", "negative"])
def test_chexpert_one_finding_and_uncertain(chexpert, tmp_path, uncertain):
    base, train_csv, table = chexpert
    result = _invoke("prepare", "csv", "--layout", "chexpert", "--csv", train_csv, "--finding", "Pleural Effusion",
                     "--uncertain", uncertain, "--out", tmp_path / "out", "--size", 16, "--workers", 0,
                     "--val-fraction", 0.34, "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    dataset = read_dataset(tmp_path / "out")
    assert dict(zip(dataset.index.id, dataset.index.class_name)) == _effusion_of(table, uncertain)
    left_out = load_report(tmp_path / "out")["csv"]["rows_left_out"]
    assert left_out == ({"uncertain": 6} if uncertain == "drop" else {})
    # The patient comes from the path; both studies of a patient land in one split.
    assert set(dataset.index.patient) <= {f"patient{p:05d}" for p in range(1, 7)}
    assert all(len(s) == 1 for s in _splits_by_patient(dataset).values())
    # AP/PA for frontal images; a lateral one (AP/PA blank) takes its Frontal/Lateral value.
    assert "Lateral" in set(dataset.index.view) and set(dataset.index.view) <= {"AP", "PA", "Lateral"}


def test_chexpert_frontal_only_multi_finding_and_no_finding(chexpert, tmp_path):
    base, train_csv, table = chexpert
    spec = CsvSpec(layout="chexpert", finding="Pleural Effusion", multi_finding="drop", negatives="no-finding",
                   where=parse_where(["Frontal/Lateral=Frontal"]))  # fmt: skip
    result = prepare_csv(train_csv, tmp_path / "out", spec, images=base.parent, size=16, workers=0)
    dataset = read_dataset(tmp_path / "out")
    report = load_report(tmp_path / "out")
    assert report["csv"]["rows_filtered_out"] == 4  # every sixth image is lateral
    frontal = [r for r in table if r[3] == "Frontal"]
    expected = {}
    for row in frontal:
        effusion, no_finding = row[CHEXPERT_HEADER.index("Pleural Effusion")], row[CHEXPERT_HEADER.index("No Finding")]
        others = any(row[CHEXPERT_HEADER.index(n)] == "1.0" for n in CHEXPERT_FINDINGS
                     if n not in ("Pleural Effusion", "No Finding", "Support Devices"))  # fmt: skip
        if effusion == "1.0" and not others:
            expected[row[0]] = "pleural-effusion"
        elif effusion in ("0.0", "") and no_finding == "1.0":
            expected[row[0]] = "no-finding"  # Support Devices alone does not count as a finding
    assert dict(zip(dataset.index.id, dataset.index.class_name)) == expected
    assert result.n_images == len(expected) and set(dataset.index.view) <= {"AP", "PA"}
    assert dataset.meta["tasks"] == {"2class": {"no-finding": ["no-finding"], "pleural-effusion": ["pleural-effusion"]}}


def test_chexpert_unknown_value_names_column_and_value(chexpert, tmp_path):
    base, train_csv, table = chexpert
    table[3][CHEXPERT_HEADER.index("Pleural Effusion")] = "2.0"
    _write_csv(train_csv, CHEXPERT_HEADER, table)
    result = _invoke("prepare", "csv", "--layout", "chexpert", "--csv", train_csv, "--finding", "Pleural Effusion",
                     "--out", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (f"Error: {train_csv}: column 'Pleural Effusion': unknown value(s) '2.0' in 1 rows "
                                     "(first on line 5); expected 1, 0, -1 (uncertain) or blank")  # fmt: skip
    result = _invoke("prepare", "csv", "--layout", "chexpert", "--csv", train_csv, "--finding", "Effusion",
                     "--out", tmp_path / "out")  # fmt: skip
    assert "no column 'Effusion' (--label-column/--finding/--findings-column)" in result.output
