"""Every script in examples/ runs end to end in its quick mode (a few steps), in a temporary folder."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_tools.errors import InputError
from pyro_adgm.label_curve import format_summary, plot_label_curve, summarise

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    """One CPU thread (these are tiny networks; two threads on a busy 2-core machine are far slower), in tmp_path."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    yield
    torch.set_num_threads(threads)


def test_every_example_has_a_docstring_a_quick_mode_and_main():
    for path in sorted(EXAMPLES.glob("*.py")):
        text = path.read_text()
        assert text.startswith('"""'), path.name
        assert "--quick" in text and "def main(argv" in text, path.name


def test_mnist_100_labels_quick(tmp_path):
    example = load_example("mnist_100_labels")
    if not (example.DEFAULT_DATA_ROOT / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found under {example.DEFAULT_DATA_ROOT} (expected MNIST/raw there)")
    result = example.main(["--quick", "--device", "cpu", "--out", str(tmp_path / "mnist")])
    assert 0.0 <= result["test_error"] <= 1.0 and result["epochs"] == 1
    saved = json.loads((tmp_path / "mnist" / "test.json").read_text())
    assert saved["report"]["n"] == 500 and len(saved["report"]["class_names"]) == 10
    assert json.loads((tmp_path / "mnist" / "config.json").read_text())["model"]["architecture"] == "mlp"


def test_mnist_split_is_the_papers():
    example = load_example("mnist_100_labels")
    images = torch.zeros((600, 28, 28), dtype=torch.uint8)
    labels = torch.arange(600) % 10
    data = example.mnist_training_data(images, labels, 3, seed=0, train_size=500, val_size=100)
    assert len(data.labelled_labels) == 30 and np.bincount(data.labelled_labels.numpy()).tolist() == [3] * 10
    assert len(data.unlabelled_images) == 470 and len(data.val_labels) == 100


def test_mnist_networks_are_the_papers_and_batch_norm_is_optional():
    example = load_example("mnist_100_labels")
    model = example.build_model()
    assert (model.a_dim, model.z_dim, model.config["hidden"]) == (100, 100, [500, 500])
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    plain = example.build_model(z_dim=50, batch_norm=False)
    assert plain.z_dim == 50 and not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    assert plain.classifier(torch.rand(3, 1, 28, 28), a=torch.randn(3, 100)).shape == (3, 10)
    assert plain.config["batch_norm"] is False and plain.config["custom_networks"] == []  # loads from its config


def test_mnist_pixels_option_sets_likelihood_and_binarising():
    example = load_example("mnist_100_labels")
    for pixels, likelihood, binarize in (("binarised", "bernoulli", True), ("grey", "bernoulli-grey", False)):
        args = example.parse_args(["--pixels", pixels])
        assert example.build_model(a_dim=4, z_dim=4, hidden=(8,), pixels=pixels).config["likelihood"] == likelihood
        assert example.training_config(args, epochs=1).binarize is binarize


def test_custom_encoder_quick(tmp_path):
    report = load_example("custom_encoder").main(["--quick", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert 0.0 <= report["accuracy"] <= 1.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["custom_networks"] == ["classifier"]


def test_label_curve_quick_and_resumable(tmp_path):
    example = load_example("label_curve")
    out = tmp_path / "curve"
    summary = example.main(["--quick", "--out", str(out)])
    assert [(s["method"], s["labels_per_class"]) for s in summary] == [("adgm", 2), ("adgm", 5), ("supervised", 2),
                                                                       ("supervised", 5)]
    assert all(s["test_accuracy_mean"] is not None for s in summary)
    for name in ("label_curve.csv", "summary.csv", "label_curve.png"):
        assert (out / name).is_file(), name
    metrics = sorted(out.glob("*/metrics.csv"))
    assert len(metrics) == 4
    before = [m.stat().st_mtime_ns for m in metrics]
    assert example.main(["--quick", "--out", str(out)]) == summary  # finished runs are read back, not trained again
    assert [m.stat().st_mtime_ns for m in metrics] == before


def test_label_curve_summary_and_plot(tmp_path):
    def row(method, seed, val, test):
        return {"method": method, "labels_per_class": 10, "seed": seed, "val_accuracy": val, "test_accuracy": test,
                "test_roc_auc": None}

    rows = [row("adgm", 0, 0.8, 0.7), row("adgm", 1, 0.6, 0.9), row("supervised", 0, 0.5, None)]
    adgm, supervised = summarise(rows)
    assert adgm["runs"] == 2 and adgm["val_accuracy_mean"] == pytest.approx(0.7)
    assert adgm["val_accuracy_sd"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert supervised["val_accuracy_sd"] is None and supervised["test_accuracy_mean"] is None
    assert "70.00 ± 14.14" in format_summary([adgm, supervised])
    assert plot_label_curve(rows, tmp_path / "curve.png").is_file()


def test_conditional_generation_quick(tmp_path):
    example = load_example("conditional_generation")
    out = example.main(["--quick", "--n", "4", "--device", "cpu", "--out", str(tmp_path / "grid.png")])
    width, height = Image.open(out).size
    # make_grid: 3 rows (classes) and 4 columns of 28x28 images with 2-pixel padding
    assert (width, height) == (4 * 30 + 2, 3 * 30 + 2)


def test_mnist_augment_option_transforms_digits_without_mirroring(tmp_path):
    example = load_example("mnist_100_labels")
    assert example.training_config(example.parse_args([]), epochs=1).augment == "none"
    config = example.training_config(example.parse_args(["--augment", "1", "--device", "cpu"]), epochs=1)
    assert (config.augment, config.augment_probability, config.augment_flip) == ("device", 1.0, False)
    for bad in ("1.5", "-0.5"):
        with pytest.raises(SystemExit):
            example.parse_args(["--augment", bad])
    images = torch.zeros((40, 28, 28), dtype=torch.uint8)
    images[:, 4:24, 8:12] = 255  # a bar left of the centre: a mirror would put it right of the centre
    data = example.mnist_training_data(images, torch.arange(40) % 10, 1, seed=0, train_size=30, val_size=10)
    trainer = example.Trainer(example.build_model(a_dim=4, z_dim=4, hidden=(8,), pixels="grey"), data, config, tmp_path / "run")
    assert trainer.augment.settings.flip is False
    torch.manual_seed(0)
    x = trainer._inputs(images)
    assert not torch.equal(x, images[:, None].float() / 255)  # transformed
    columns = torch.arange(28, dtype=torch.float)
    centre_of_mass = (x.sum(dim=(1, 2)) * columns).sum(-1) / x.sum(dim=(1, 2, 3))
    assert centre_of_mass.max() < 13.5  # every bar stays left of the centre (13.5): it starts at 9.5, shifts at most 1.4 px, plus scale/rotation


def test_mnist_batch_means_weighting_is_the_unlabelled_weight_n_l_over_n_u():
    from pyro_adgm.objectives import DataSizes, resolved_unlabelled_weight

    example = load_example("mnist_100_labels")
    data = example.mnist_training_data(torch.zeros((600, 28, 28), dtype=torch.uint8), torch.arange(600) % 10, 3, seed=0,
                                       train_size=500, val_size=100)  # fmt: skip
    sizes = DataSizes(len(data.labelled_labels), len(data.unlabelled_images))
    default = example.training_config(example.parse_args([]), epochs=1).unlabelled_weight
    assert resolved_unlabelled_weight(default, sizes) == pytest.approx(30 / 470)
    assert example.training_config(example.parse_args(["--unlabelled-weight", "1"]), epochs=1).unlabelled_weight == 1.0
    with pytest.raises(SystemExit):
        example.parse_args(["--unlabelled-weight", "heavy"])


def test_custom_objective_quick_trains_the_adgm_and_its_consistency_variant_through_the_same_loop(tmp_path):
    from pyro_adgm.objectives import OBJECTIVES

    example = load_example("custom_objective")
    out = tmp_path / "consistency"
    summary = example.main(["--quick", "--targets", "soft", "--consistency-weight", "2", "--out", str(out)])
    assert [(s["method"], s["labels_per_class"]) for s in summary] == [("adgm", 3), ("adgm-consistency", 3)]
    assert OBJECTIVES["adgm-consistency"].func is example.ConsistencyObjective  # registered, the loop untouched
    with open(out / "adgm-consistency-3labels-seed0" / "metrics.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["consistency_loss"]) > 0 and row["unlabelled_bound"] != "nan"
    with open(out / "adgm-3labels-seed0" / "metrics.csv", newline="") as handle:
        assert "consistency_loss" not in next(csv.DictReader(handle))
    for name in ("consistency.csv", "consistency_summary.csv"):
        assert (out / name).is_file(), name
    with open(out / "consistency_summary.csv", newline="") as summary_file, open(out / "consistency.csv", newline="") as runs_file:
        written, runs = ({r["method"]: r for r in csv.DictReader(f)} for f in (summary_file, runs_file))
    assert float(written["adgm-consistency - adgm"]["val_accuracy_mean"]) == pytest.approx(
        float(runs["adgm-consistency"]["val_accuracy"]) - float(runs["adgm"]["val_accuracy"]))  # fmt: skip
    # the same folder with other settings of the term is refused, not reported as them
    with pytest.raises(InputError, match="consistency.json: the runs in .* had the consistency settings"):
        example.main(["--quick", "--targets", "hard", "--out", str(out)])


def test_consistency_term_is_the_cross_entropy_against_the_weak_view_s_fixed_prediction():
    from pyro_adgm import ADGM, TrainConfig
    from pyro_adgm.objectives import DataSizes

    example = load_example("custom_objective")
    model = ADGM(num_classes=2, image_size=28, a_dim=4, z_dim=4, channels=(8, 16), hidden=(16,)).eval()
    objective = example.ConsistencyObjective(model, TrainConfig(), DataSizes(10, 90), targets="soft")
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(0)
    soft = objective.consistency(x, x)
    with torch.no_grad():
        weak = model.classifier(x, a=model.aux_encoder(x)[0]).softmax(-1)
    assert soft.shape == (5,) and (soft >= 0).all()
    objective.targets, objective.threshold = "hard", 1.0  # no prediction is that confident: no target
    assert objective.consistency(x, x).abs().sum() == 0
    objective.threshold = 0.0  # every image gets its most probable class as the target
    torch.manual_seed(0)
    hard = objective.consistency(x, x)
    torch.manual_seed(0)
    a_loc, a_scale = model.aux_encoder(x)
    log_q = model.classifier(x, a=a_loc + a_scale * torch.randn_like(a_loc)).log_softmax(-1)
    torch.testing.assert_close(hard, -log_q.gather(1, weak.argmax(-1, keepdim=True)).squeeze(1))
    strong = objective.strong_view(torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8))
    assert strong.shape == (5, 1, 28, 28) and 0 <= strong.min() and strong.max() <= 1
