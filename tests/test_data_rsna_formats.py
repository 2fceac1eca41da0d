"""`prepare rsna` with PNG and JPEG images: mixed folders, duplicates across formats, 16-bit PNGs, the real
1,500-image PNG set."""

import io
import shutil

import numpy as np
from click.testing import CliRunner
from data_helpers import (
    load_report,
    phantom,
    read_dataset,
    shared_data_or_skip,
    stored_values,
    write_dicom,
    write_jpeg_rgb,
    write_png,
    write_rsna_csvs,
)
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from cli.main import app
from data_tools.imaging import load_grayscale, png_significant_bits, prepare_image, to_uint8_square
from data_tools.rsna import prepare_rsna

RSNA_1500_COUNTS = {"Normal": 458, "No Lung Opacity / Not Normal": 667, "Lung Opacity": 375}


def _write_png16(path, values, significant_bits=None):
    """uint16 (H, W) ``values`` as a 16-bit grayscale PNG, with an sBIT chunk when ``significant_bits`` is set."""
    info = PngInfo()
    if significant_bits is not None:
        info.add(b"sBIT", bytes([significant_bits]))
    Image.fromarray(values.astype(np.uint16)).save(path, pnginfo=info)
    return path


def test_mixed_formats_are_read_warned_and_cross_format_duplicates_listed(tmp_path):
    root = tmp_path / "rsna"
    images = root / "stage_2_train_images"
    classes = ("Normal", "Lung Opacity", "No Lung Opacity / Not Normal")
    labels = {}
    for i in range(9):
        patient = f"p{i:02d}"
        labels[patient] = classes[i % 3]
        image = phantom(40, 48, seed=i)
        if i % 3 == 0:
            write_dicom(images / f"{patient}.dcm", stored_values(image, 8), jpeg=True)
        elif i % 3 == 1:
            write_png(images / f"{patient}.png", image)
        else:
            write_jpeg_rgb(images / f"{patient}.jpg", image)
    # p00 also as PNG and JPEG: the DICOM is kept, the other two are duplicates; p01 also as JPEG: PNG kept.
    write_png(images / "p00.png", phantom(40, 48, seed=50))
    write_jpeg_rgb(images / "extra" / "p00.jpeg", phantom(40, 48, seed=51))
    write_jpeg_rgb(images / "p01.jpg", phantom(40, 48, seed=52))
    write_rsna_csvs(root, labels)

    result = prepare_rsna(tmp_path / "out", root=root, size=24, workers=0, max_failure_fraction=0.5)
    report = load_report(tmp_path / "out")
    assert result.n_images == 9 and report["images_found"] == 12
    assert report["image_formats"] == {"DICOM": 3, "PNG": 4, "JPEG": 5}
    assert len(report["warnings"]) == 1
    assert "mixes image formats (3 DICOM, 4 PNG, 5 JPEG)" in report["warnings"][0]
    duplicates = [(f["id"], f["path"].rsplit("/", 1)[1]) for f in report["failures"] if f["kind"] == "duplicate"]
    assert duplicates == [("p00", "p00.jpeg"), ("p00", "p00.png"), ("p01", "p01.jpg")]
    assert all("already read from" in f["message"] for f in report["failures"])
    dataset = read_dataset(tmp_path / "out")
    rows = {patient: k for k, patient in enumerate(dataset.index.id)}
    for patient, name in (("p00", "p00.dcm"), ("p01", "p01.png"), ("p02", "p02.jpg")):
        np.testing.assert_array_equal(dataset.images[rows[patient]], prepare_image(images / name, size=24)[0])
    assert dataset.meta["counts"]["all"] == {"Normal": 3, "Lung Opacity": 3, "No Lung Opacity / Not Normal": 3}


def test_one_format_gives_no_warning(tmp_path):
    root = tmp_path / "rsna"
    labels = {f"p{i}": ("Normal", "Lung Opacity")[i % 2] for i in range(4)}
    for i, patient in enumerate(labels):
        write_png(root / "stage_2_train_images" / f"{patient}.png", phantom(32, 32, seed=i))
    write_rsna_csvs(root, labels)
    prepare_rsna(tmp_path / "out", root=root, size=16, workers=0)
    report = load_report(tmp_path / "out")
    assert report["warnings"] == [] and report["image_formats"] == {"PNG": 4}


def test_16_bit_png_scaled_by_its_significant_bits(tmp_path):
    image = phantom(30, 40, seed=3)
    full = _write_png16(tmp_path / "full.png", stored_values(image, 16))
    raw12 = _write_png16(tmp_path / "raw12.png", stored_values(image, 12), significant_bits=12)
    # sBIT 12 on values scaled up to 16 bits, as the PNG standard asks of encoders: the full range applies.
    scaled12 = _write_png16(tmp_path / "scaled12.png", stored_values(image, 12) << 4, significant_bits=12)
    assert png_significant_bits(raw12.read_bytes()) == 12 and png_significant_bits(full.read_bytes()) is None
    for path, tol in ((full, 0.5 / 65535), (raw12, 0.5 / 4095), (scaled12, 0.5 / 4095 + 16 / 65535)):
        out = load_grayscale(path)
        assert out.dtype == np.float32 and out.shape == (30, 40)
        assert np.abs(out - image).max() <= tol + 1e-6, path.name
        # The prepare path agrees: not clipped at 255 as an 8-bit conversion would be, not darkened 16-fold.
        prepared, _ = prepare_image(path, size=20)
        assert np.abs(prepared.astype(int) - to_uint8_square(image, 20).astype(int)).max() <= 1, path.name


def test_png_significant_bits_ignores_other_files(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    assert png_significant_bits(buffer.getvalue()) is None
    assert png_significant_bits(b"not a png") is None


def test_real_rsna_1500_pngs_with_the_cli(tmp_path):
    root = shared_data_or_skip("rsna-1500")
    out = tmp_path / "rsna1500"
    result = CliRunner().invoke(app, ["prepare", "rsna", "--root", str(root), "--size", "225", "--out", str(out),
                                      "--workers", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 1500 images" in result.output
    dataset = read_dataset(out)
    assert dataset.images.shape == (1500, 225, 225)
    assert dataset.meta["counts"]["all"] == RSNA_1500_COUNTS
    report = load_report(out)
    assert report["image_formats"] == {"PNG": 1500} and report["images_failed"] == 0
    assert report["labels"]["class_target_disagreements"]["count"] == 0
    assert report["labels"]["patients_without_image"]["count"] == 0
    # 10% of each class's patients, rounded: 667 -> 67, 458 -> 46, 375 -> 38.
    assert dataset.meta["counts"]["val"] == {"No Lung Opacity / Not Normal": 67, "Normal": 46, "Lung Opacity": 38}


def test_real_rsna_pngs_beside_its_dicoms(tmp_path):
    """The 16 real DICOMs plus real PNGs: one of a patient with a DICOM (a duplicate across formats, the DICOM
    kept) and one of another patient (read). Both formats are counted and the mix is reported."""
    dicoms = shared_data_or_skip("rsna", "stage_2_train_images")
    pngs = shared_data_or_skip("rsna-1500", "stage_2_train_images")
    root = tmp_path / "rsna"
    images = root / "stage_2_train_images"
    shutil.copytree(dicoms, images)
    both = sorted(p.stem for p in dicoms.glob("*.dcm") if (pngs / f"{p.stem}.png").exists())
    other = next(p for p in sorted(pngs.glob("*.png")) if not (dicoms / f"{p.stem}.dcm").exists())
    assert both, "the two real sets share a patient"
    shutil.copy(pngs / f"{both[0]}.png", images)
    shutil.copy(other, images)
    for name in ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"):
        shutil.copy(dicoms.parent / name, root / name)
    result = prepare_rsna(tmp_path / "out", root=root, size=64, workers=0, max_failure_fraction=0.1)
    report = load_report(tmp_path / "out")
    assert result.n_images == 17 and report["image_formats"] == {"DICOM": 16, "PNG": 2}
    assert "16 DICOM, 2 PNG" in report["warnings"][0]
    assert [(f["id"], f["kind"]) for f in report["failures"]] == [(both[0], "duplicate")]
    assert report["failures"][0]["path"].endswith(".png")
    dataset = read_dataset(tmp_path / "out")
    assert other.stem in set(dataset.index.id)
