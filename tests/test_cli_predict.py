"""`pyro-adgm predict` on a folder and with --out FILE.csv, with a tiny checkpoint trained here."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from data_helpers import phantom, stored_values, write_dicom, write_jpeg_rgb, write_png

from cli.main import app

FAST = ["--config", str(Path(__file__).with_name("fast_cli.toml"))]  # one epoch on 120 demo phantoms at 28x28
CLASSES = ("normal", "abnormal")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run"
    result = CliRunner().invoke(app, ["train", "--task", "2class", "--labels", "3", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    return out / "best.pt"


@pytest.fixture
def scans(tmp_path):
    """A folder of a PNG, a 16-bit PNG, a JPEG and a DICOM, plus files predict must skip."""
    folder = tmp_path / "scans"
    write_png(folder / "b.png", phantom(40, 50, seed=1))
    write_png(folder / "a16.PNG", phantom(36, 36, seed=2), bits=16)
    write_jpeg_rgb(folder / "c.jpg", phantom(30, 44, seed=3))
    write_dicom(folder / "d.dcm", stored_values(phantom(32, 32, seed=4), 12), bits_stored=12)
    (folder / "notes.txt").write_text("not an image")
    write_png(folder / "nested" / "e.png", phantom(30, 30, seed=5))  # sub-folders are not searched
    write_png(folder / ".hidden.png", phantom(30, 30, seed=6))
    return folder


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _check_rows(rows, files):
    assert [r["file"] for r in rows] == [str(f) for f in files]
    for row in rows:
        assert sum(float(row[f"p_{c}"]) for c in CLASSES) == pytest.approx(1, abs=1e-5)
        assert row["predicted"] in CLASSES


def test_a_folder_stands_for_its_images_sorted(checkpoint, scans):
    result = _invoke("predict", "--checkpoint", checkpoint, scans)
    assert result.exit_code == 0, result.output
    expected = [scans / "a16.PNG", scans / "b.png", scans / "c.jpg", scans / "d.dcm"]
    _check_rows(list(csv.DictReader(io.StringIO(result.output))), expected)
    # Folders and files mix, in the order given.
    result = _invoke("predict", "--checkpoint", checkpoint, scans / "nested" / "e.png", scans)
    assert result.exit_code == 0, result.output
    _check_rows(list(csv.DictReader(io.StringIO(result.output))), [scans / "nested" / "e.png", *expected])


def test_out_writes_the_csv_to_a_file(checkpoint, scans, tmp_path):
    out = tmp_path / "predictions.csv"
    out.write_text("an older file\n")
    result = _invoke("predict", "--checkpoint", checkpoint, scans, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote 4 predictions to {out}"
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    _check_rows(rows, [scans / "a16.PNG", scans / "b.png", scans / "c.jpg", scans / "d.dcm"])
    assert list(rows[0]) == ["file", "predicted", "p_normal", "p_abnormal"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv", "scans"]  # no temporary left
    # Same probabilities as on standard output.
    stdout_rows = list(csv.DictReader(io.StringIO(_invoke("predict", "--checkpoint", checkpoint, scans).output)))
    np.testing.assert_allclose([float(r["p_normal"]) for r in rows], [float(r["p_normal"]) for r in stdout_rows])


def test_bad_arguments_end_with_one_line(checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    for args, fragment in [
        ([tmp_path / "empty"], f"{tmp_path / 'empty'}: no image files (.dcm, .dicom, .png, .jpg, .jpeg) directly in this folder"),
        ([tmp_path / "empty", "--out", tmp_path / "no" / "such" / "p.csv"], "no image files"),
    ]:
        result = _invoke("predict", "--checkpoint", checkpoint, *args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.startswith("Error: ") and fragment in result.output, result.output
    write_png(tmp_path / "one.png", phantom(30, 30))
    result = _invoke("predict", "--checkpoint", checkpoint, tmp_path / "one.png", "--out", tmp_path / "new" / "p.csv")
    assert result.exit_code == 0 and (tmp_path / "new" / "p.csv").read_text().startswith("file,predicted,"), result.output  # as sample does
    (tmp_path / "a-file").write_text("")
    result = _invoke("predict", "--checkpoint", checkpoint, tmp_path / "one.png", "--out", tmp_path / "a-file" / "p.csv")
    assert result.exit_code == 1 and result.output.startswith(f"Error: {tmp_path / 'a-file'}"), result.output
    assert "folder" in _invoke("predict", "--help").output and "sub-folders" in _invoke("predict", "--help").output
