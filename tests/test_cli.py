"""The `pyro-adgm` command line through click.testing.CliRunner: every command and every bad option."""

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import app
from data_tools.demo import make_demo_dataset
from pyro_adgm.likelihoods import DiscretizedLogisticLikelihood
from pyro_adgm.runs import load_model

#: one epoch on 120 demo phantoms at 28x28 (the file's settings)
FAST_CONFIG = Path(__file__).with_name("fast_cli.toml")
FAST = ["--config", str(FAST_CONFIG)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(app, ["train", "--task", "3class", "--labels", "5", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "val accuracy" in result.output and "confusion matrix" in result.output
    return out


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # an exception would be a traceback
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("Error:") or "Usage:" in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.mark.parametrize("command", ["train", "evaluate", "sample", "predict", "prepare"])
def test_every_command_help_shows_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "pyro-adgm" in result.output


def test_train_writes_run_and_resume_extends_it(run_dir, caplog):
    assert (run_dir / "best.pt").is_file() and (run_dir / "report.json").is_file()
    result = invoke("train", "--resume", run_dir, "--epochs", "2")
    assert result.exit_code == 0, result.output
    with open(run_dir / "metrics.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]
    with caplog.at_level(logging.INFO, logger="pyro_adgm"):
        again = invoke("train", "--resume", run_dir, "--epochs", "2")  # finished: says so, trains nothing
    assert again.exit_code == 0, again.output
    assert "the run has its 2 epochs already: nothing to train" in caplog.text


def test_evaluate_prints_table_and_writes_json_and_png(run_dir, tmp_path):
    result = invoke("evaluate", "--checkpoint", run_dir / "best.pt", "--split", "test", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "evaluation-test.json").read_text())
    assert report["split"] == "test" and len(report["confusion_matrix"]) == 3
    assert f"test accuracy: {report['accuracy']:.4f}" in result.output
    assert (tmp_path / "confusion-test.png").is_file()


def test_evaluate_on_the_unlabelled_images_scores_the_hidden_labels(run_dir, tmp_path):
    result = invoke("evaluate", "--checkpoint", run_dir / "best.pt", "--split", "unlabelled", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "evaluation-unlabelled.json").read_text())
    demo = json.loads((run_dir / "config.json").read_text())["data"]["demo"]
    train_images = len(make_demo_dataset(demo["n_images"], demo["image_size"], seed=demo["seed"]).split_indices("train"))
    assert report["split"] == "unlabelled" and report["n"] == train_images - 3 * 5  # 5 labels per class drawn
    assert f"unlabelled accuracy: {report['accuracy']:.4f}" in result.output


def test_sample_writes_a_png_grid_of_the_class(run_dir, tmp_path):
    out = tmp_path / "opacity.png"
    result = invoke("sample", "--checkpoint", run_dir / "best.pt", "--class", "opacity", "--n", 9, "--out", out)
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(out))
    assert grid.shape == (3 * 28 + 4 * 2, 3 * 28 + 4 * 2)
    jpeg = tmp_path / "opacity.jpg"  # the format its name asks for
    assert invoke("sample", "--checkpoint", run_dir / "best.pt", "--class", "opacity", "--n", 4, "--out", jpeg).exit_code == 0
    assert Image.open(jpeg).format == "JPEG" and Image.open(out).format == "PNG"


def test_predict_writes_csv_of_probabilities(run_dir, tmp_path):
    files = []
    for i in range(2):
        path = tmp_path / f"scan{i}.png"
        Image.fromarray((np.random.default_rng(i).random((40, 50)) * 255).astype(np.uint8)).save(path)
        files.append(path)
    result = invoke("predict", "--checkpoint", run_dir / "best.pt", *files)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["file"] for r in rows] == [str(f) for f in files]
    for row in rows:
        probs = [float(row[f"p_{c}"]) for c in ("normal", "opacity", "not-normal")]
        assert sum(probs) == pytest.approx(1, abs=1e-5)
        assert row["predicted"] in ("normal", "opacity", "not-normal")


def test_bad_class_names_the_classes(run_dir):
    assert_one_line_error(invoke("sample", "--checkpoint", run_dir / "best.pt", "--class", "abnormal"),
                          "class 'abnormal'", "normal, opacity, not-normal")  # fmt: skip


def test_adgm_defaults_to_the_paper_s_uniform_prior_and_per_sample_decoder_norm(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["augment_flip"] is True  # chest X-rays are mirrored unless --no-augment-flip
    assert config["train"]["decoupled_weight_decay"] is True
    assert config["model"]["learn_class_prior"] is False and config["model"]["prior_weighted_labels"] is False
    assert config["model"]["likelihood"] == "gaussian" and config["model"]["decoder_norm"] == "group"
    with open(run_dir / "metrics.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert [float(p) for p in row["class_prior"].split()] == pytest.approx([1 / 3] * 3, abs=1e-4)
    # bits per pixel, the Gaussian's density read through the 1/255 width of an 8-bit level: near a uniform guess's 8
    assert 0 < float(row["unlabelled_bits_per_dim"]) < 12


def test_config_only_settings_come_from_a_hand_written_file(tmp_path):
    settings = tmp_path / "settings.toml"
    settings.write_text(FAST_CONFIG.read_text() + 'augment_flip = false\nlikelihood = "discretized-logistic"\n')
    out = tmp_path / "logistic"
    result = invoke("train", "--config", settings, "--task", "2class", "--labels", "5", "--out", out)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["augment_flip"] is False and config["train"]["likelihood"] == "discretized-logistic"
    assert config["model"]["likelihood"] == "discretized-logistic"
    model, _ = load_model(out / "best.pt", "cpu")  # the checkpoint rebuilds the likelihood it was trained with
    assert isinstance(model.likelihood, DiscretizedLogisticLikelihood)
    result = invoke("sample", "--checkpoint", out / "best.pt", "--class", "abnormal", "--n", 4, "--out", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(tmp_path / "s.png")).shape == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2)


def test_too_many_labels_names_class_and_count(tmp_path):
    result = invoke("train", "--task", "2class", "--labels", "1000", "--out", tmp_path / "r", *FAST)
    assert_one_line_error(result, "1000 asked", "training images")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["evaluate", "--checkpoint", "missing.pt"], ["missing.pt: checkpoint not found"]),
        (["sample", "--checkpoint", "missing.pt", "--class", "normal"], ["missing.pt: checkpoint not found"]),
        (["train", "--data", "no/such/folder"], ["no/such/folder", "not a prepared dataset folder"]),
        (["train", "--task", "5class", *FAST], ["task '5class'", "2class, 3class"]),
        (["train", "--labels", "0"], ["--labels: expected a value at least 1, got 0"]),
        (["train", "--resume", "no/such/run"], ["no/such/run", "run directory not found"]),
        (["train", "--augment", "fancy"], ["--augment"]),
        (["train", *FAST, "--device", "cuda:7"], ["CUDA is not available"]),
        (["train", *FAST, "--device", "gpu"], ["device 'gpu'", "auto, cpu, cuda"]),
        (["train", *FAST, "--image-size", "300"], ["--image-size: expected a value at most 256, got 300"]),
        (["train", *FAST, "--variant", "sdgm"], ["--variant"]),  # retired, as --lr-schedule and --labelled-weighting
        (["train", *FAST, "--lr-schedule", "cosine"], ["--lr-schedule"]),
        (["train", *FAST, "--precision", "fp16"], ["--precision", "'fp16' is not one of 'fp32', 'bf16'"]),
        (["train", "--config", "missing.toml"], ["missing.toml: config file not found"]),
        (["train", "--resume", "runs/x", "--seed", "1"], ["--resume", "only --epochs"]),
    ],
)
def test_bad_options_end_with_one_line(args, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert_one_line_error(invoke(*args), *fragments)


@pytest.mark.parametrize(
    "args, fragments, settings",
    [
        (["train", "--config", "c.toml", "--method", "supervised"], ["supervised", "learned p(y)"], 'class_prior = "learned"'),
        (["train", "--config", "c.toml"], ["c.toml: label_weights: expected one of prior, equal, got 'heavy'"], 'label_weights = "heavy"'),
        (["train", "--config", "c.toml"], ["c.toml: likelihood: expected one of gaussian, discretized-logistic, got 'bernoulli-grey'"], 'likelihood = "bernoulli-grey"'),
        (["train", "--config", "c.toml"], ["c.toml: unlabelled_weight: expected a value above 0, got 0.0"], "unlabelled_weight = 0"),
        (["train", "--config", "c.toml", "--method", "supervised"], ["likelihood 'discretized-logistic'", "supervised"], 'likelihood = "discretized-logistic"'),
        (["train", "--config", "c.toml", "--labels", "5"], ["class prior", "unknown: opacity"], 'class_prior = "normal=0.5,opacity=0.5"'),
        (["train", "--config", "c.toml"], ["class prior", "got 'flat'"], 'class_prior = "flat"'),
        (["train", "--config", "c.toml"], ["c.toml: unknown setting 'learning_rate'"], "learning_rate = 0.1"),
        (["train", "--config", "c.toml"], ["c.toml: setting 'lr_schedule' was retired"], 'lr_schedule = "cosine"'),
        (["train", "--config", "c.toml"], ["c.toml: not a TOML file"], "epochs = = 3"),
        (["train", "--config", "c.toml"], ["c.toml: architecture: unknown key 'depth'"], "architecture = {depth = 3}"),
        (["train", "--config", "c.toml"], ["c.toml: precision: expected one of fp32, bf16, got 'fp16'"], 'precision = "fp16"'),
    ],
)
def test_bad_settings_in_a_config_file_end_with_one_line_naming_it(args, fragments, settings, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(FAST_CONFIG.read_text() + settings + "\n")
    assert_one_line_error(invoke(*args), *fragments)


def test_a_failed_process_of_a_torchrun_run_ends_with_one_line(tmp_path, monkeypatch):
    from pyro_adgm import runs
    from pyro_adgm.distributed import PeerFailure

    def failing(*args, **kwargs):
        raise PeerFailure("rank 0 of 2: averaging the gradients failed: another process of the run stopped\nor did not answer")

    monkeypatch.setattr(runs, "train", failing)
    result = invoke("train", *FAST, "--out", tmp_path / "run")
    assert_one_line_error(result, "Error: rank 0 of 2: averaging the gradients failed: another process of the run stopped; or did not answer")


def test_missing_file_for_predict(run_dir):
    assert_one_line_error(invoke("predict", "--checkpoint", run_dir / "best.pt", "no/such/scan.dcm"), "no/such/scan.dcm")


def test_corrupt_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_one_line_error(invoke("evaluate", "--checkpoint", bad), "bad.pt", "not a readable pyro-adgm checkpoint")


def test_tensorboard_writes_each_epoch_s_metrics_beside_metrics_csv(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    result = invoke("train", "--task", "2class", "--labels", "5", "--tensorboard", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    with open(out / "metrics.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    (val,) = events.Scalars("val_accuracy")
    assert val.step == 1 and val.value == pytest.approx(float(row["val_accuracy"]), rel=1e-6)
    assert "unlabelled_bits_per_dim" in events.Tags()["scalars"]
