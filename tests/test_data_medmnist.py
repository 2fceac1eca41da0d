"""`prepare medmnist`: splits kept, class names, resizing, bad files; the real PneumoniaMNIST."""

import numpy as np
import pytest
from click.testing import CliRunner
from data_helpers import read_dataset, shared_data_or_skip

from cli.main import app
from data_tools.errors import InputError
from data_tools.medmnist import prepare_medmnist


def _npz(path, n=(12, 4, 6), size=28, channels=None, label_shape=1, classes=2):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size) + ((channels,) if channels else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count * label_shape) % classes).reshape(count, label_shape)
    np.savez(path, **arrays)
    return path, arrays


def test_splits_and_pixels_kept(tmp_path):
    path, arrays = _npz(tmp_path / "pneumoniamnist.npz")
    result = prepare_medmnist(path, tmp_path / "out")
    dataset = read_dataset(tmp_path / "out")
    assert result.n_images == 22 and dataset.images.shape == (22, 28, 28)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(dataset.images[dataset.split_indices(split)], arrays[f"{split}_images"])
    assert dataset.meta["class_names"] == ["normal", "pneumonia"]
    assert dataset.meta["tasks"] == {"2class": {"normal": ["normal"], "abnormal": ["pneumonia"]}}
    labels, _ = dataset.task_labels("2class")
    np.testing.assert_array_equal(labels[dataset.split_indices("val")], arrays["val_labels"].ravel())


def test_resize_colour_and_class_names(tmp_path):
    path, _ = _npz(tmp_path / "bloodmnist.npz", channels=3, classes=3)
    prepare_medmnist(path, tmp_path / "out", size=40, class_names=["x", "y", "z"])
    dataset = read_dataset(tmp_path / "out")
    assert dataset.images.shape == (22, 40, 40)
    assert dataset.meta["tasks"] == {"3class": {"x": ["x"], "y": ["y"], "z": ["z"]}}
    prepare_medmnist(path, tmp_path / "numbers")
    assert read_dataset(tmp_path / "numbers").meta["class_names"] == ["0", "1", "2"]


def test_bad_files(tmp_path):
    multi, _ = _npz(tmp_path / "chestmnist.npz", label_shape=14)
    with pytest.raises(InputError, match="multi-label"):
        prepare_medmnist(multi, tmp_path / "out")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="no train_images/train_labels; found keys x"):
        prepare_medmnist(tmp_path / "other.npz", tmp_path / "out")
    few, _ = _npz(tmp_path / "few.npz", classes=3)
    with pytest.raises(InputError, match="2 class names"):
        prepare_medmnist(few, tmp_path / "out", class_names=["a", "b"])
    with pytest.raises(InputError, match="a,a,b: expected distinct names"):
        prepare_medmnist(few, tmp_path / "out", class_names=["a", "a", "b"])
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        prepare_medmnist(tmp_path / "broken.npz", tmp_path / "out")


def test_real_pneumoniamnist(tmp_path):
    path = shared_data_or_skip("pneumoniamnist", "pneumoniamnist_28.npz")
    command = ["prepare", "medmnist", str(path), "--out", str(tmp_path / "out"), "--no-progress"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    counts = read_dataset(tmp_path / "out").meta["counts"]
    assert counts["train"] == {"normal": 1214, "pneumonia": 3494}
    assert counts["val"] == {"normal": 135, "pneumonia": 389}
    assert counts["test"] == {"normal": 234, "pneumonia": 390}
    # the in-distribution test split of BENCHMARKS.md: 624 training images (as many as the file's test split)
    result = CliRunner().invoke(app, [*command[:-3], "--test-from-train", "624", "--out", str(tmp_path / "iid"), "--no-progress"])
    assert result.exit_code == 0, result.output
    counts = read_dataset(tmp_path / "iid").meta["counts"]
    assert counts["train"] == {"normal": 1071, "pneumonia": 3013}
    assert counts["test"] == {"normal": 143, "pneumonia": 481}
    assert counts["val"] == {"normal": 135, "pneumonia": 389}


def test_test_split_drawn_from_train(tmp_path):
    path, arrays = _npz(tmp_path / "pneumoniamnist.npz")
    prepare_medmnist(path, tmp_path / "out", test_from_train=5, seed=3)
    dataset = read_dataset(tmp_path / "out")
    train, val, test = (dataset.images[dataset.split_indices(s)] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (7, 4, 5)  # the file's 6 test images left out
    np.testing.assert_array_equal(val, arrays["val_images"])
    rows = {image.tobytes(): row for row, image in enumerate(arrays["train_images"])}
    test_rows = sorted(rows[image.tobytes()] for image in test)
    train_rows = sorted(rows[image.tobytes()] for image in train)
    assert sorted(test_rows + train_rows) == list(range(12))  # every training image once, in one split or the other
    assert list(dataset.index.id[dataset.split_indices("test")]) == [f"train-{row:05d}" for row in test_rows]
    labels, _ = dataset.task_labels("2class")
    np.testing.assert_array_equal(labels[dataset.split_indices("test")], arrays["train_labels"].ravel()[test_rows])
    assert dataset.meta["medmnist"]["test_from_train"] == {"images": 5, "seed": 3}
    prepare_medmnist(path, tmp_path / "again", test_from_train=5, seed=3)  # the draw is the seed's
    again = read_dataset(tmp_path / "again")
    assert list(again.index.id[again.split_indices("test")]) == list(dataset.index.id[dataset.split_indices("test")])
    prepare_medmnist(path, tmp_path / "other", test_from_train=5, seed=4)
    other = read_dataset(tmp_path / "other")
    assert list(other.index.id[other.split_indices("test")]) != list(dataset.index.id[dataset.split_indices("test")])


@pytest.mark.parametrize("count", [12, 40])
def test_test_from_train_needs_training_images_left(tmp_path, count):
    path, _ = _npz(tmp_path / "pneumoniamnist.npz")
    with pytest.raises(InputError, match=f"test_from_train: expected a count between 1 and 11 .*got {count}"):
        prepare_medmnist(path, tmp_path / "out", test_from_train=count)
    result = CliRunner().invoke(app, ["prepare", "medmnist", str(path), "--test-from-train", str(count), "--out",
                                      str(tmp_path / "cli"), "--no-progress"])  # fmt: skip
    assert result.exit_code != 0 and "between 1 and 11" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "cli").exists()
