"""Reusing run folders in label curves: a run is reused only if its model and training settings are the ones asked for."""

from pathlib import Path

import pytest

from data_tools.errors import InputError
from pyro_adgm.label_curve import check_same_model, check_same_training
from pyro_adgm.runs import model_options_for
from pyro_adgm.training import TrainConfig

RUN = Path("runs/sweep/adgm-10labels-seed0")


def saved_config(**model):
    return {"class_names": ["normal", "abnormal"], "model": {"num_classes": 2, **model}}


LEARNED = saved_config(variant="adgm", class_prior=None, learn_class_prior=True, prior_weighted_labels=True)
KNOWN = saved_config(variant="adgm", class_prior=[0.25, 0.75], learn_class_prior=False, prior_weighted_labels=True)


def test_the_same_settings_are_reused():
    check_same_model(LEARNED, model_options_for("adgm"), RUN)
    check_same_model(KNOWN, model_options_for("adgm", "abnormal=0.75,normal=0.25"), RUN)


@pytest.mark.parametrize(
    "saved, options, message",
    [
        (LEARNED, model_options_for("adgm", variant="sdgm"), "variant = adgm, not the sdgm"),
        # saved before the likelihood was compared: such a run has the Gaussian
        (LEARNED, model_options_for("adgm", likelihood="bernoulli-grey"), "likelihood = gaussian, not the bernoulli-grey"),
        (saved_config(**{**LEARNED["model"], "likelihood": "bernoulli-grey"}), model_options_for("adgm"), "likelihood = bernoulli-grey, not the gaussian"),
        (LEARNED, model_options_for("adgm", "normal=0.25,abnormal=0.75"), "learn_class_prior = True, not the False"),
        (KNOWN, model_options_for("adgm", "normal=0.3,abnormal=0.7"), r"class_prior = \[0.25, 0.75\], not the \[0.3, 0.7\]"),
        (KNOWN, model_options_for("supervised"), r"class_prior = \[0.25, 0.75\], not the uniform"),
        (LEARNED, model_options_for("adgm", label_weights="equal"), "prior_weighted_labels = True, not the False"),
        # saved before the p(y) fields existed: such a run loads with a fixed uniform p(y), not a learned one
        (saved_config(), model_options_for("adgm"), "learn_class_prior = False, not the True"),
    ],
)
def test_a_run_of_another_model_is_refused(saved, options, message):
    with pytest.raises(InputError, match=f"holds a run with model {message} asked for"):
        check_same_model(saved, options, RUN)


def test_label_weights_do_not_matter_under_a_uniform_prior():
    # every K * p(y) weight is 1 there, so the flag does not change the model
    old_baseline = saved_config()  # saved before the flags existed
    check_same_model(old_baseline, model_options_for("supervised"), RUN)
    check_same_model(saved_config(class_prior=[0.5, 0.5], prior_weighted_labels=False), model_options_for("adgm", "uniform", "prior"), RUN)


def test_known_shares_naming_another_task_s_classes_are_refused():
    with pytest.raises(InputError, match="unknown: opacity; missing: abnormal"):
        check_same_model(KNOWN, model_options_for("adgm", "normal=0.25,opacity=0.75"), RUN)


def test_a_run_trained_with_another_beta_or_unlabelled_weight_is_refused():
    saved = {"train": {"beta": 1.0, "unlabelled_weight": 0.25}}
    check_same_training(saved, TrainConfig(beta=1.0, unlabelled_weight=0.25), RUN)
    with pytest.raises(InputError, match="trained with unlabelled_weight = 0.25, not the 1 asked for"):
        check_same_training(saved, TrainConfig(), RUN)
    with pytest.raises(InputError, match="trained with beta = 1, not the 10 asked for"):
        check_same_training(saved, TrainConfig(beta=10, unlabelled_weight=0.25), RUN)
    # saved before the field existed: such a run had the full unlabelled term
    with pytest.raises(InputError, match="unlabelled_weight = 1, not the 0.5"):
        check_same_training({"train": {"beta": 1.0}}, TrainConfig(unlabelled_weight=0.5), RUN)


def test_the_supervised_baseline_is_reused_whatever_the_unlabelled_weight():
    # it has no unlabelled term, so one set of baseline runs serves sweeps of the ADGM's weight
    check_same_training({"train": {"beta": 1.0}}, TrainConfig(method="supervised", unlabelled_weight=0.25), RUN)
