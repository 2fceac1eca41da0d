"""Split and labelled-subset rules on prepared data: stratified, by patient, disjoint, seeded."""

import numpy as np
import pytest
from data_helpers import make_rsna_root, read_dataset

from data_tools.dataset import labelled_subset, stratified_split
from data_tools.errors import InputError
from data_tools.rsna import prepare_rsna


def _patients_and_classes(n_patients=300, seed=0):
    rng = np.random.default_rng(seed)
    patients, classes = [], []
    for p in range(n_patients):
        name = ["normal", "opacity", "not-normal"][p % 3]
        for _ in range(rng.integers(1, 4)):  # one to three images per patient
            patients.append(f"patient-{p:04d}")
            classes.append(name)
    return np.array(patients, dtype=object), np.array(classes, dtype=object)


def test_split_is_by_patient_stratified_and_seeded():
    patients, classes = _patients_and_classes()
    splits = stratified_split(patients, classes, val_fraction=0.1, test_fraction=0.2, seed=3)
    for patient in set(patients):
        assert len(set(splits[patients == patient])) == 1  # a patient never straddles two splits
    for name in set(classes):
        members = sorted(set(patients[classes == name]))
        per_split = {s: len(set(patients[(classes == name) & (splits == s)])) for s in ("train", "val", "test")}
        assert per_split == {"val": round(0.1 * len(members)), "test": round(0.2 * len(members)),
                             "train": len(members) - round(0.1 * len(members)) - round(0.2 * len(members))}
    assert (stratified_split(patients, classes, val_fraction=0.1, test_fraction=0.2, seed=3) == splits).all()
    assert (stratified_split(patients, classes, val_fraction=0.1, test_fraction=0.2, seed=4) != splits).any()


def test_labelled_subset_from_train_only_and_seeded():
    patients, classes = _patients_and_classes()
    splits = stratified_split(patients, classes, val_fraction=0.1, seed=0)
    labels = np.array([["normal", "opacity", "not-normal"].index(c) for c in classes])
    train = np.flatnonzero(splits == "train")
    subset = labelled_subset(labels, train, 10, ("normal", "opacity", "not-normal"), seed=1)
    assert len(subset) == 30 and set(subset) <= set(train)
    assert np.bincount(labels[subset]).tolist() == [10, 10, 10]
    same = labelled_subset(labels, train, 10, ("normal", "opacity", "not-normal"), seed=1)
    np.testing.assert_array_equal(subset, same)
    assert set(subset) != set(labelled_subset(labels, train, 10, ("normal", "opacity", "not-normal"), seed=2))
    names = ("normal", "opacity", "not-normal")
    per_class = np.bincount(labels[train])
    smallest = int(np.argmin(per_class))
    with pytest.raises(InputError, match=f"class '{names[smallest]}' has only {per_class[smallest]} training images"):
        labelled_subset(labels, train, int(per_class[smallest]) + 1, names, seed=1)


def test_prepared_splits_follow_the_rules(tmp_path):
    root = tmp_path / "rsna"
    make_rsna_root(root, 60, size=16)
    prepare_rsna(tmp_path / "a", root=root, size=16, workers=0, val_fraction=0.2, test_fraction=0.1, seed=7)
    prepare_rsna(tmp_path / "b", root=root, size=16, workers=0, val_fraction=0.2, test_fraction=0.1, seed=7)
    a, b = read_dataset(tmp_path / "a"), read_dataset(tmp_path / "b")
    assert (a.index.split == b.index.split).all()
    counts = a.meta["counts"]
    for name in ("Normal", "Lung Opacity", "No Lung Opacity / Not Normal"):
        assert (counts["train"][name], counts["val"][name], counts["test"][name]) == (14, 4, 2)
    ids = {s: set(a.index.patient[a.split_indices(s)]) for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert a.meta["splits"] == {"val_fraction": 0.2, "test_fraction": 0.1, "seed": 7}


def test_a_saved_dataset_keeps_its_task_classes_in_order(tmp_path):
    from data_tools.demo import make_demo_dataset

    dataset = make_demo_dataset(30, 16, seed=0)
    saved = read_dataset(dataset.save(tmp_path / "demo"))
    for task, classes in (("2class", ("normal", "abnormal")), ("3class", ("normal", "opacity", "not-normal"))):
        assert saved.task_labels(task)[1] == dataset.task_labels(task)[1] == classes  # label k: one class in memory and on disk
        np.testing.assert_array_equal(saved.task_labels(task)[0], dataset.task_labels(task)[0])
