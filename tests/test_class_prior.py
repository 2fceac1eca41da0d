"""p(y) cannot starve a class: trained on unlabelled images of unequal class shares, every class keeps at least
half its true share of p(y) and of the predictions."""

import numpy as np
import pyro
import pytest
import torch
from conftest import SMALL_MODEL

from data_tools.demo import make_demo_dataset
from pyro_adgm.evaluation import predict_proba
from pyro_adgm.model import ADGM
from pyro_adgm.runs import model_options_for
from pyro_adgm.training import TrainConfig, Trainer, TrainingData

SHARES = np.array([0.6, 0.3, 0.1])  # the unlabelled images' classes: normal, opacity, not-normal


def unequal_training_data(n_unlabelled=300, labels_per_class=20, seed=0) -> TrainingData:
    dataset = make_demo_dataset(900, 28, seed=seed)
    labels, names = dataset.task_labels("3class")
    images = torch.from_numpy(np.asarray(dataset.images))
    train, val = dataset.split_indices("train"), dataset.split_indices("val")
    by_class = [train[labels[train] == k] for k in range(3)]
    labelled = np.concatenate([rows[:labels_per_class] for rows in by_class])
    counts = np.round(SHARES * n_unlabelled).astype(int)
    unlabelled = np.concatenate([rows[labels_per_class : labels_per_class + n] for rows, n in zip(by_class, counts)])
    assert all(len(rows) >= labels_per_class + n for rows, n in zip(by_class, counts))
    return TrainingData(labelled_images=images[labelled], labelled_labels=torch.from_numpy(labels[labelled]),
                        unlabelled_images=images[unlabelled], val_images=images[val], val_labels=torch.from_numpy(labels[val]),
                        class_names=names)  # fmt: skip


@pytest.mark.slow
def test_the_default_prior_starves_no_class_on_unequal_unlabelled_shares(tmp_path):
    """Ten short epochs, the unlabelled term at its full weight for the last five. The p(y) is the fixed uniform
    one, so the predictions are what can starve a class: with the unlabelled term weighted 1 (J^alpha, each image
    once) q(y|a,x) follows it instead of the 60 labels, whose training accuracy ends at 0.40 with a share of 0.00
    predicted as opacity. The default weight, N_l / N_u (the batches weigh alike), holds the labels
    (benchmarks/labels_drowned.py). (With the learned p(y) and labels weighted by K * p(y), this run ends with
    p(y) at (0.27, 0.28, 0.45) and 8% of the images predicted as opacity, under half of its 30%.)"""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    data = unequal_training_data()
    model = ADGM(num_classes=3, image_size=28, **SMALL_MODEL, **model_options_for("adgm"))
    config = TrainConfig(task="3class", epochs=10, batch_size=32, warmup_epochs=5, lr=3e-3, device="cpu", seed=0)
    Trainer(model, data, config, tmp_path / "run").fit()
    prior = model.prior_probs().detach().numpy()
    predicted = np.bincount(predict_proba(model, data.unlabelled_images).argmax(1), minlength=3) / len(data.unlabelled_images)
    assert (prior >= SHARES / 2).all(), prior
    assert (predicted >= SHARES / 2).all(), predicted
