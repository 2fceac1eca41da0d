"""Reusing run folders in label curves: a run is reused only if its model and training settings are the ones asked for;
the results file that lets a sweep go on without its run folders."""

import multiprocessing
from pathlib import Path

import pytest

from data_tools.errors import InputError
from pyro_adgm.label_curve import check_same_model, check_same_training, merge_row, read_rows
from pyro_adgm.runs import model_options_for
from pyro_adgm.training import TrainConfig

RUN = Path("runs/sweep/adgm-10labels-seed0")


def saved_config(**model):
    return {"class_names": ["normal", "abnormal"], "model": {"num_classes": 2, **model}}


def current(**changes):
    """The config.json model of a run with the current defaults, with ``changes``."""
    return saved_config(**{"likelihood": "gaussian", "decoder_norm": "group", "class_prior": None,
                           "learn_class_prior": False, "prior_weighted_labels": False, **changes})  # fmt: skip


#: saved before the likelihood and the decoder's normalisation were recorded: a Gaussian, per-class batch norm
LEARNED = saved_config(class_prior=None, learn_class_prior=True, prior_weighted_labels=True)
KNOWN = current(class_prior=[0.25, 0.75])
OLD_STYLE = {"likelihood": "gaussian", "decoder_norm": "batch"}


def test_the_same_settings_are_reused():
    check_same_model(current(), model_options_for("adgm"), RUN)
    check_same_model(KNOWN, model_options_for("adgm", "abnormal=0.75,normal=0.25"), RUN)
    check_same_model(LEARNED, {**model_options_for("adgm", "learned", "prior", likelihood="gaussian"), "decoder_norm": "batch"}, RUN)


@pytest.mark.parametrize(
    "saved, options, message",
    [
        (LEARNED, {**model_options_for("adgm", "learned", "prior", likelihood="discretized-logistic"), "decoder_norm": "batch"},
         "likelihood = gaussian, not the discretized-logistic"),
        (current(likelihood="bernoulli-grey"), model_options_for("adgm"), "likelihood = bernoulli-grey, not the gaussian"),
        (LEARNED, {**model_options_for("adgm", "learned", "prior", likelihood="gaussian")}, "decoder_norm = batch, not the group"),
        (current(learn_class_prior=True, prior_weighted_labels=True), model_options_for("adgm", "normal=0.25,abnormal=0.75"),
         "learn_class_prior = True, not the False"),
        (KNOWN, model_options_for("adgm", "normal=0.3,abnormal=0.7"), r"class_prior = \[0.25, 0.75\], not the \[0.3, 0.7\]"),
        (KNOWN, model_options_for("adgm"), r"class_prior = \[0.25, 0.75\], not the uniform"),
        (current(learn_class_prior=True, prior_weighted_labels=True), model_options_for("adgm", "learned", "equal"),
         "prior_weighted_labels = True, not the False"),
        # saved before the p(y) fields existed: such a run loads with a fixed uniform p(y), not a learned one
        (saved_config(), {**model_options_for("adgm", "learned"), **OLD_STYLE}, "learn_class_prior = False, not the True"),
    ],
)
def test_a_run_of_another_model_is_refused(saved, options, message):
    with pytest.raises(InputError, match=f"holds a run with model {message} asked for"):
        check_same_model(saved, options, RUN)


def test_a_run_of_the_retired_sdgm_is_refused():
    with pytest.raises(InputError, match="holds a run of the retired 'sdgm' variant, not the ADGM asked for"):
        check_same_model(current(variant="sdgm"), model_options_for("adgm"), RUN)
    check_same_model(current(variant="adgm"), model_options_for("adgm"), RUN)  # written while the variant existed


def test_label_weights_do_not_matter_under_a_uniform_prior():
    # every K * p(y) weight is 1 there, so the flag does not change the model
    check_same_model(current(class_prior=[0.5, 0.5], prior_weighted_labels=False), model_options_for("adgm", "uniform", "prior"), RUN)


def test_a_supervised_run_is_reused_whatever_the_generative_settings():
    # the baseline trains q(a|x) and q(y|a,x) only: its saved likelihood and decoder norm say nothing about it
    old_baseline = {**saved_config(), "train": {"method": "supervised"}}  # saved before the flags existed
    check_same_model(old_baseline, model_options_for("supervised"), RUN)


def test_known_shares_naming_another_task_s_classes_are_refused():
    with pytest.raises(InputError, match="unknown: opacity; missing: abnormal"):
        check_same_model(KNOWN, model_options_for("adgm", "normal=0.25,opacity=0.75"), RUN)


def test_a_run_trained_with_another_beta_or_unlabelled_weight_is_refused():
    saved = {"train": {"beta": 1.0, "unlabelled_weight": 0.25, "decoupled_weight_decay": True}}
    check_same_training(saved, TrainConfig(beta=1.0, unlabelled_weight=0.25), RUN)
    with pytest.raises(InputError, match="trained with unlabelled_weight = 0.25, not the 1 asked for"):
        check_same_training(saved, TrainConfig(unlabelled_weight=1.0), RUN)
    with pytest.raises(InputError, match="trained with unlabelled_weight = 0.25, not the batch-means asked for"):
        check_same_training(saved, TrainConfig(), RUN)  # the default: N_l / N_u of the run's own draw
    with pytest.raises(InputError, match="trained with beta = 1, not the 10 asked for"):
        check_same_training(saved, TrainConfig(beta=10, unlabelled_weight=0.25), RUN)
    # saved before the fields existed: such a run had the full unlabelled term and Adam's coupled decay
    with pytest.raises(InputError, match="unlabelled_weight = 1, not the 0.5"):
        check_same_training({"train": {"beta": 1.0, "decoupled_weight_decay": True}}, TrainConfig(unlabelled_weight=0.5), RUN)
    with pytest.raises(InputError, match="decoupled_weight_decay = False, not the True"):
        check_same_training({"train": {"beta": 1.0}}, TrainConfig(unlabelled_weight=1.0), RUN)


def test_the_supervised_baseline_is_reused_whatever_the_unlabelled_weight():
    # it has no unlabelled term, so one set of baseline runs serves sweeps of the ADGM's weight
    check_same_training({"train": {"beta": 1.0, "decoupled_weight_decay": True}},
                        TrainConfig(method="supervised", unlabelled_weight=0.25), RUN)  # fmt: skip


def row(method, labels, seed, accuracy):
    return {"method": method, "labels_per_class": labels, "seed": seed, "val_accuracy": accuracy, "final_val_accuracy": accuracy,
            "test_accuracy": None, "test_roc_auc": None, "seconds": 1.5, "run_dir": f"runs/{method}-{labels}-{seed}"}  # fmt: skip


def test_a_merged_row_replaces_its_run_and_keeps_the_others(tmp_path):
    path = tmp_path / "rows.csv"
    for r in (row("adgm", 10, 0, 0.5), row("supervised", 10, 0, 0.6), row("adgm", 10, 0, 0.7)):
        merge_row(r, path)
    assert read_rows(path) == [row("adgm", 10, 0, 0.7), row("supervised", 10, 0, 0.6)]
    assert read_rows(tmp_path / "absent.csv") == []


def merge_seed(args):
    path, seed = args
    for labels in range(15):
        merge_row(row("adgm", labels, seed, 0.5), path)


def test_two_processes_merging_into_one_file_lose_no_row(tmp_path):
    path = tmp_path / "rows.csv"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(merge_seed, [(path, 0), (path, 1)])
    assert sorted((r["labels_per_class"], r["seed"]) for r in read_rows(path)) == [(n, s) for n in range(15) for s in (0, 1)]


def test_a_results_file_with_a_bad_cell_names_its_line(tmp_path):
    path = tmp_path / "rows.csv"
    merge_row(row("adgm", 10, 0, 0.5), path)
    path.write_text(path.read_text().replace("0.5", "half"))
    with pytest.raises(InputError, match=r"rows.csv, line 2: .*half"):
        read_rows(path)
    path.write_text("method,seed\nadgm,0\n")
    with pytest.raises(InputError, match="rows.csv, line 2: no labels_per_class"):
        read_rows(path)


def test_paired_differences_pair_the_same_seeds():
    from pyro_adgm.label_curve import paired_differences

    rows = [{"method": "a", "labels_per_class": 10, "seed": 0, "val_accuracy": 0.8},
            {"method": "a", "labels_per_class": 10, "seed": 1, "val_accuracy": 0.9},
            {"method": "a", "labels_per_class": 10, "seed": 2, "val_accuracy": 0.5},  # no baseline of seed 2: left out
            {"method": "b", "labels_per_class": 10, "seed": 0, "val_accuracy": 0.7},
            {"method": "b", "labels_per_class": 10, "seed": 1, "val_accuracy": 0.6},
            {"method": "b", "labels_per_class": 100, "seed": 0, "val_accuracy": 0.6}]  # fmt: skip
    (out,) = paired_differences(rows, "a", "b", metrics=("val_accuracy", "test_accuracy"))
    assert out["method"] == "a - b" and out["labels_per_class"] == 10 and out["runs"] == 2
    assert out["val_accuracy_mean"] == pytest.approx(0.2) and out["val_accuracy_sd"] == pytest.approx(0.02**0.5)  # differences 0.1, 0.3
    assert out["test_accuracy_mean"] is None  # neither has it
