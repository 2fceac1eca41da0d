"""`prepare folder`: class sub-folders of PNG/JPEG/DICOM, split folders honoured, task mappings."""

import numpy as np
import pytest
from click.testing import CliRunner
from data_helpers import load_report, phantom, read_dataset, stored_values, write_dicom, write_jpeg_rgb, write_png

from cli.main import app
from data_tools.classes import canonical_tasks
from data_tools.errors import InputError
from data_tools.folder import prepare_folder
from data_tools.imaging import to_uint8_square


def _fill(folder, n, seed=0):
    """n images in turn as 8-bit PNG, 16-bit PNG, RGB JPEG and 12-bit DICOM, of different shapes."""
    for i in range(n):
        image = phantom(30 + 4 * (i % 3), 36, seed=seed + i)
        kind = i % 4
        if kind == 0:
            write_png(folder / f"img{i}.png", image)
        elif kind == 1:
            write_png(folder / f"img{i}.png", image, bits=16)
        elif kind == 2:
            write_jpeg_rgb(folder / f"img{i}.jpg", image)
        else:
            write_dicom(folder / f"img{i}.dcm", stored_values(image, 12), bits_stored=12, view=None)


def test_class_folders_with_mixed_formats(tmp_path):
    root = tmp_path / "xrays"
    for k, name in enumerate(("normal", "opacity", "not-normal")):
        _fill(root / name, 10, seed=10 * k)
    (root / "normal" / "readme.txt").write_text("ignored")
    result = prepare_folder(root, tmp_path / "out", size=20, workers=0, val_fraction=0.2)
    dataset = read_dataset(tmp_path / "out")
    assert result.n_images == 30 and dataset.images.shape == (30, 20, 20)
    assert dataset.meta["class_names"] == ["normal", "not-normal", "opacity"]
    assert dataset.meta["tasks"] == canonical_tasks(["normal", "opacity", "not-normal"])
    assert set(dataset.meta["tasks"]) == {"2class", "3class"}
    assert dataset.meta["counts"]["val"] == {"normal": 2, "opacity": 2, "not-normal": 2}
    assert dataset.index.id[0] == "normal/img0.png"
    assert load_report(tmp_path / "out")["ignored_files"] == 1
    # Each format (8/16-bit PNG, RGB JPEG, 12-bit DICOM) comes out as the picture that was written.
    ids = list(dataset.index.id)
    for i in range(4):
        row = ids.index(f"normal/img{i}.{'png' if i < 2 else 'jpg' if i == 2 else 'dcm'}")
        expected = to_uint8_square(phantom(30 + 4 * (i % 3), 36, seed=i), 20)
        assert np.abs(dataset.images[row].astype(int) - expected).mean() < 2, ids[row]


def test_split_folders_are_kept(tmp_path):
    root = tmp_path / "chest_xray"
    for split in ("train", "test"):
        for name in ("NORMAL", "PNEUMONIA"):
            _fill(root / split / name, 10 if split == "train" else 3, seed=len(name))
    prepare_folder(root, tmp_path / "out", size=16, workers=0, val_fraction=0.2, test_fraction=0.5)
    dataset = read_dataset(tmp_path / "out")
    counts = dataset.meta["counts"]
    # test/ kept as it is (the --test-fraction is not used); val drawn from train/ since there is no val/.
    assert counts["test"] == {"NORMAL": 3, "PNEUMONIA": 3}
    assert counts["val"] == {"NORMAL": 2, "PNEUMONIA": 2} and counts["train"] == {"NORMAL": 8, "PNEUMONIA": 8}
    assert all(i.startswith("test/") for i in dataset.index.id[dataset.split_indices("test")])
    assert dataset.meta["tasks"] == {"2class": {"normal": ["NORMAL"], "abnormal": ["PNEUMONIA"]}}


def test_other_class_names_get_their_own_task(tmp_path):
    root = tmp_path / "pets"
    for name in ("cat", "dog", "fish"):
        _fill(root / name, 4)
    prepare_folder(root, tmp_path / "out", size=16, workers=0, val_fraction=0.25)
    tasks = read_dataset(tmp_path / "out").meta["tasks"]
    assert tasks == {"3class": {"cat": ["cat"], "dog": ["dog"], "fish": ["fish"]}}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root.mkdir(), "no class sub-folders"),
        (lambda root: (root / "normal").mkdir(parents=True), "no image files"),
        (lambda root: [(root / "train" / "a").mkdir(parents=True), (root / "normal").mkdir()], "mixes split folders"),
        (lambda root: None, "folder not found"),
    ],
    ids=["no-classes", "empty", "mixed", "missing"],
)
def test_bad_folders_fail_before_any_work(tmp_path, make, message):
    root = tmp_path / "in"
    make(root)
    with pytest.raises(InputError, match=message):
        prepare_folder(root, tmp_path / "out", size=16, workers=0)
    assert not (tmp_path / "out.partial").exists()


def test_cli_prepare_folder(tmp_path):
    root = tmp_path / "in"
    for name in ("normal", "abnormal"):
        _fill(root / name, 4)
    result = CliRunner().invoke(app, ["prepare", "folder", str(root), "--out", str(tmp_path / "out"), "--size", "16",
                                      "--workers", "0", "--val-fraction", "0.25", "--square", "pad"])
    assert result.exit_code == 0, result.output
    dataset = read_dataset(tmp_path / "out")
    assert dataset.meta["preprocessing"]["square"] == "pad"
    assert dataset.meta["tasks"] == {"2class": {"normal": ["normal"], "abnormal": ["abnormal"]}}
    assert np.asarray(dataset.images).std() > 10
