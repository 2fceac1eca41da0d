"""Helpers for the data-tools tests: synthetic DICOM/PNG/JPEG files and a small RSNA-like download.

Every file is written here, by pydicom and Pillow; nothing is downloaded.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

#: The real data shared by the project's checkouts (absent in a user's fresh clone).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def phantom(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth float (h, w) image in [0, 1] with some structure: gradients, a disc and mild noise."""
    rng = np.random.default_rng(seed)
    v, u = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    image = 0.25 + 0.35 * u + 0.2 * np.sin(6 * v + rng.uniform(0, 6))
    image += 0.3 * (((u - rng.uniform(0.3, 0.7)) ** 2 + (v - 0.5) ** 2) < 0.04)
    image += rng.normal(0, 0.01, size=(h, w))
    return np.clip(image, 0, 1)


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    bits_stored: int = 8,
    photometric: str = "MONOCHROME2",
    jpeg: bool = False,
    quality: int = 95,
    signed: bool = False,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    view: str | None = "PA",
    patient_id: str | None = None,
    transfer_syntax: str | None = None,
    with_pixels: bool = True,
) -> Path:
    """Write ``stored`` (integer (rows, cols), the stored values) as a DICOM file; return its path.

    ``jpeg=True``: 8-bit JPEG Baseline, encoded by Pillow and wrapped with :func:`pydicom.encaps.encapsulate`.
    ``transfer_syntax`` only relabels the file (to test unsupported syntaxes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id or path.stem
    ds.Modality = "CR"
    if view is not None:
        ds.ViewPosition = view
    rows, cols = stored.shape
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    allocated = 8 if bits_stored <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        if jpeg:
            buffer = io.BytesIO()
            Image.fromarray(stored.astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
            ds.PixelData = encapsulate([buffer.getvalue()])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            ds.LossyImageCompression = "01"
        else:
            dtype = {(8, False): np.uint8, (16, False): np.uint16, (8, True): np.int8, (16, True): np.int16}
            ds.PixelData = np.ascontiguousarray(stored.astype(dtype[(allocated, signed)])).tobytes()
            ds["PixelData"].VR = "OB" if allocated == 8 else "OW"
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def stored_values(image: np.ndarray, bits: int) -> np.ndarray:
    """float [0, 1] -> integers in [0, 2**bits - 1]."""
    return np.round(image * (2**bits - 1)).astype(np.int64)


def write_png(path: Path, image: np.ndarray, *, bits: int = 8) -> Path:
    """float [0, 1] -> 8- or 16-bit grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint8 if bits == 8 else np.uint16
    Image.fromarray(stored_values(image, bits).astype(dtype)).save(path)
    return path


def write_jpeg_rgb(path: Path, image: np.ndarray) -> Path:
    """float [0, 1] -> an RGB JPEG whose three channels are equal (so its luminance is ``image``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gray = stored_values(image, 8).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(path, quality=95)
    return path


RSNA_CLASSES = ("Normal", "Lung Opacity", "No Lung Opacity / Not Normal")


def write_rsna_csvs(root: Path, labels: dict[str, str], *, boxes: int = 2, extra_rows: list[tuple] = ()) -> None:
    """The two Kaggle CSVs for ``labels`` (patientId -> class), Lung Opacity patients with ``boxes`` rows.

    extra_rows: (patientId, class, target) rows appended to both files, to make disagreements.
    """
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "stage_2_train_labels.csv", "w", newline="") as labels_file, open(
        root / "stage_2_detailed_class_info.csv", "w", newline=""
    ) as class_file:
        lw, cw = csv.writer(labels_file), csv.writer(class_file)
        lw.writerow(["patientId", "x", "y", "width", "height", "Target"])
        cw.writerow(["patientId", "class"])
        for patient, name in labels.items():
            n = boxes if name == "Lung Opacity" else 1
            for k in range(n):
                if name == "Lung Opacity":
                    lw.writerow([patient, 100 + k, 200, 50, 60, 1])
                else:
                    lw.writerow([patient, "", "", "", "", 0])
                cw.writerow([patient, name])
        for patient, name, target in extra_rows:
            lw.writerow([patient, "", "", "", "", target])
            cw.writerow([patient, name])


def make_rsna_root(root: Path, n: int, *, size: int = 48, jpeg: bool = True, seed: int = 0) -> dict[str, str]:
    """A Kaggle-like RSNA folder with ``n`` labelled images (classes in turn); returns patientId -> class."""
    labels = {}
    for i in range(n):
        patient = f"p{seed:02d}-{i:05d}"
        labels[patient] = RSNA_CLASSES[i % 3]
        write_dicom(
            root / "stage_2_train_images" / f"{patient}.dcm",
            stored_values(phantom(size, size, seed=i), 8),
            jpeg=jpeg,
            view="PA" if i % 2 else "AP",
        )
    write_rsna_csvs(root, labels)
    return labels


def shared_data_or_skip(*parts: str) -> Path:
    """The path under ../shared/data, or skip the test with the reason."""
    import pytest

    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present at {path} (only in the project's shared checkout)")
    return path


def load_report(out: Path) -> dict:
    import json

    return json.loads((Path(out) / "report.json").read_text())


def read_dataset(out: Path):
    from data_tools.dataset import PreparedDataset

    return PreparedDataset.load(out)

