"""Training runs: artefacts, resume, divergence, the supervised baseline, and learning on the demo data."""

import csv
import json
import math
from dataclasses import replace

import pyro
import pytest
import torch
from conftest import SMALL_MODEL

from data_tools.errors import InputError
from pyro_adgm.checkpoint import load_checkpoint
from pyro_adgm.objectives import Batch, linear_ramp
from pyro_adgm.runs import load_model, model_options_for, prepare_trainer, resume, train
from pyro_adgm.training import TrainConfig, TrainingDiverged

TINY_DEMO = {"n_images": 150, "image_size": 28, "seed": 3}


def tiny_config(**overrides):
    values = dict(task="3class", labels_per_class=5, epochs=2, batch_size=16, warmup_epochs=4, device="cpu", seed=7)
    values.update(overrides)
    return TrainConfig(**values)


def read_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_warmup_ramp_rises_linearly_every_step():
    weights = [linear_ramp(e + (s + 1) / 4, 2) for e in range(3) for s in range(4)]
    assert weights[:8] == pytest.approx([i / 8 for i in range(1, 9)])
    assert weights[8:] == [1.0] * 4
    assert linear_ramp(0.1, 0) == 1.0


def test_run_directory_holds_every_artefact(tmp_path):
    report, run_dir = train(tiny_config(), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    for name in ("metrics.csv", "best.pt", "last.pt", "config.json", "report.json", "confusion.png", "curves.png"):
        assert (run_dir / name).is_file(), name
    rows = read_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        for column in ("labelled_bound", "unlabelled_bound", "classification_loss", "kl_weight", "train_accuracy", "val_accuracy", "seconds"):
            assert row[column] not in ("", "nan"), column
    assert float(rows[1]["kl_weight"]) == pytest.approx(0.5)
    saved = json.loads((run_dir / "report.json").read_text())
    assert len(saved["confusion_matrix"]) == 3 and saved["split"] == "val"
    assert sum(map(sum, saved["confusion_matrix"])) == saved["n"]
    state = load_checkpoint(run_dir / "last.pt")  # weights_only=True inside
    assert state["epoch"] == 2 and state["class_names"] == ["normal", "opacity", "not-normal"]
    # train() builds what `pyro-adgm train` builds: the method's p(y) settings under the given options
    model_config = json.loads((run_dir / "config.json").read_text())["model"]
    assert model_config["learn_class_prior"] is False and model_config["prior_weighted_labels"] is False
    assert model_config["likelihood"] == "gaussian" and model_config["decoder_norm"] == "group"
    assert model_config["a_dim"] == SMALL_MODEL["a_dim"]


def test_resume_continues_exactly(tmp_path):
    # a 1-epoch run extended to 2 epochs is the 2-epoch run
    straight_report, straight = train(tiny_config(), demo=TINY_DEMO, run_dir=tmp_path / "straight", model_options=SMALL_MODEL)
    train(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "split", model_options=SMALL_MODEL)
    resumed_report, resumed = resume(tmp_path / "split", epochs=2)
    columns = ("train_loss", "labelled_bound", "unlabelled_bound", "classification_loss", "train_accuracy", "val_accuracy")
    assert len(read_rows(straight)) == len(read_rows(resumed)) == 2
    for a, b in zip(read_rows(straight), read_rows(resumed)):
        for column in columns:
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-6, abs=1e-9), column
    state_a, state_b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    for key in ("model_state", "train_model_state"):  # the evaluated average and the raw weights
        for name, value in state_a[key].items():
            torch.testing.assert_close(value, state_b[key][name], rtol=1e-6, atol=1e-8)
    assert state_a["average_state"] == state_b["average_state"]
    assert straight_report["confusion_matrix"] == resumed_report["confusion_matrix"]


@pytest.mark.parametrize("method", ["adgm", "supervised"])
def test_a_run_stopped_by_its_time_limit_resumes_exactly(tmp_path, method):
    config = tiny_config(lr=1e-3, method=method, class_prior="learned" if method == "adgm" else "uniform")  # p(y): a rate of its own
    _, straight = train(config, demo=TINY_DEMO, run_dir=tmp_path / "straight", model_options=SMALL_MODEL)
    # the same two-epoch run, stopped after its first epoch by a time limit, then resumed
    train(replace(config, max_seconds=1e-6), demo=TINY_DEMO, run_dir=tmp_path / "split", model_options=SMALL_MODEL)
    assert len(read_rows(tmp_path / "split")) == 1
    _, resumed = resume(tmp_path / "split", max_seconds=math.inf)
    for a, b in zip(read_rows(straight), read_rows(resumed), strict=True):
        for column in ("train_loss", "unlabelled_bound", "val_accuracy"):
            assert a[column] == b[column] or float(a[column]) == pytest.approx(float(b[column]), rel=1e-6, abs=1e-9), column
    state_a, state_b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    for name, value in state_a["train_model_state"].items():
        torch.testing.assert_close(value, state_b["train_model_state"][name], rtol=1e-6, atol=1e-8)


def test_settings_round_trip_and_unknown_or_retired_keys_are_refused_by_name():
    config = tiny_config(architecture=SMALL_MODEL, class_prior="normal=0.3,abnormal=0.7", task="2class")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(InputError, match="^last.pt: unknown setting 'learning_rate'$"):
        TrainConfig.from_dict({"learning_rate": 0.1}, source="last.pt")
    for key in ("labelled_weighting", "lr_schedule", "variant"):
        with pytest.raises(InputError, match=f"setting '{key}' was retired \\(the last commit with it: [0-9a-f]{{7}}\\)"):
            TrainConfig.from_dict({key: "bound"})
    with pytest.raises(InputError, match="^a.toml: batch_size: expected an integer, got 'big'$"):
        TrainConfig.from_dict({"batch_size": "big"}, source="a.toml")


def test_refuses_to_overwrite_a_run(tmp_path):
    train(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    with pytest.raises(InputError, match="already holds a run"):
        train(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_checkpoint(tmp_path):
    trainer = prepare_trainer(tiny_config(epochs=3), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    original_step = trainer.objective.step

    def step_then_fail(*args):
        loss = original_step(*args)
        return float("nan") if trainer.epoch == 1 else loss

    trainer.objective.step = step_then_fail
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1; the last good checkpoint is .*last\.pt"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


def test_supervised_baseline_trains_only_the_classifier_path(tmp_path):
    trainer = prepare_trainer(tiny_config(method="supervised", epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    generative = ("image_decoder", "aux_decoder", "latent_encoder")
    before = {name: {k: v.clone() for k, v in getattr(trainer.model, name).state_dict().items()} for name in generative}
    classifier_before = [p.clone() for p in trainer.model.classifier.parameters()]
    trainer.fit()
    for network in generative:
        for name, value in getattr(trainer.model, network).state_dict().items():
            torch.testing.assert_close(value, before[network][name])
    assert any(not torch.equal(p, q) for p, q in zip(trainer.model.classifier.parameters(), classifier_before))
    row = read_rows(tmp_path / "run")[0]
    assert row["labelled_bound"] == row["kl_weight"] == row["unlabelled_weight"] == "nan"  # it has no bound and no KL


def test_more_labels_than_a_class_has_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"500 asked, but class '[a-z-]+' has only \d+ training images"):
        train(tiny_config(labels_per_class=500), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)


@pytest.mark.slow
def test_main_job_on_demo_data_beats_chance(tmp_path):
    """The README's main job: `pyro-adgm train --task 2class --labels 50 --epochs 4` on the demo phantoms."""
    # train() builds the command line's model (model_options_for("adgm")), as the artefact test checks
    report, _ = train(TrainConfig(task="2class", labels_per_class=50, epochs=4, device="cpu"), run_dir=tmp_path / "run")
    counts = [sum(row) for row in report["confusion_matrix"]]
    majority_rate = max(counts) / sum(counts)
    assert report["roc_auc"] > 0.8
    assert report["accuracy"] > majority_rate + 0.08
    assert min(report["per_class_accuracy"].values()) > 0.5  # not one class for everything


def test_custom_network_checkpoint_needs_and_accepts_the_rebuilt_model(tmp_path):
    from pyro_adgm import ADGM, CategoricalNet, MLPTrunk
    from pyro_adgm.runs import load_model, sample

    def build():
        torch.manual_seed(0)
        classifier = CategoricalNet(MLPTrunk(28 * 28, (16,)), {"a": 8}, 3, hidden=(16,))
        return ADGM(num_classes=3, image_size=28, networks={"classifier": classifier}, **SMALL_MODEL)

    _, run_dir = train(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "run", model=build())
    with pytest.raises(InputError, match="custom networks"):
        load_model(run_dir / "best.pt")
    model, state = load_model(run_dir / "best.pt", model=build())
    torch.testing.assert_close(model.classifier.trunk.layers[1].weight, state["model_state"]["classifier.trunk.layers.1.weight"])
    assert sample(run_dir / "best.pt", "opacity", n=4, out=tmp_path / "s.png", model=build()).is_file()
    _, resumed = resume(run_dir, epochs=2, model=build())
    assert load_checkpoint(resumed / "last.pt")["epoch"] == 2


def test_training_data_keeps_splits_apart_and_labels_aligned():
    from data_tools.demo import make_demo_dataset
    from pyro_adgm.runs import build_training_data

    dataset = make_demo_dataset(200, 16, seed=5)
    data = build_training_data(dataset, "3class", 4, seed=2)
    labels, names = dataset.task_labels("3class")
    as_rows = {bytes(img): i for i, img in enumerate(dataset.images)}  # phantoms are all different
    labelled = [as_rows[bytes(img.numpy())] for img in data.labelled_images]
    unlabelled = [as_rows[bytes(img.numpy())] for img in data.unlabelled_images]
    val = [as_rows[bytes(img.numpy())] for img in data.val_images]
    assert len(set(labelled)) == 12 and not set(labelled) & set(unlabelled)
    assert {dataset.index.split[i] for i in labelled + unlabelled} == {"train"}
    assert {dataset.index.split[i] for i in val} == {"val"}
    assert len(labelled) + len(unlabelled) == len(dataset.split_indices("train"))
    assert data.labelled_labels.tolist() == labels[labelled].tolist()
    assert data.val_labels.tolist() == labels[val].tolist()
    assert sorted(data.labelled_labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_the_unlabelled_split_is_the_run_s_own_unlabelled_images_with_their_hidden_labels():
    from data_tools.demo import make_demo_dataset
    from pyro_adgm.runs import build_training_data, checkpoint_split

    demo = {"n_images": 200, "image_size": 16, "seed": 5}
    dataset = make_demo_dataset(**demo)
    data = build_training_data(dataset, "3class", 4, seed=2)
    labels, names = dataset.task_labels("3class")
    state = {"data": {"data": None, "demo": demo}, "train_config": {"task": "3class", "labels_per_class": 4, "seed": 2},
             "class_names": list(names)}  # fmt: skip
    images, hidden, _, _ = checkpoint_split(state, "unlabelled", 16)
    assert torch.equal(images, data.unlabelled_images)  # every demo image has a 3class label
    as_rows = {bytes(img): i for i, img in enumerate(dataset.images)}
    assert hidden.tolist() == labels[[as_rows[bytes(img.numpy())] for img in images]].tolist()
    other_draw, _, _, _ = checkpoint_split({**state, "train_config": {**state["train_config"], "seed": 3}}, "unlabelled", 16)
    assert len(other_draw) == len(images) and not torch.equal(other_draw, images)


def test_each_batch_stands_for_its_images_in_j_alpha(tmp_path):
    trainer = prepare_trainer(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    seen = []
    step = trainer.objective.svi.step
    trainer.objective.svi.step = lambda *args, **kwargs: seen.append(kwargs) or step(*args, **kwargs)
    trainer.train_epoch()
    assert len(seen) == trainer.steps_per_epoch
    assert {k["labelled_size"] for k in seen} == {len(trainer.data.labelled_labels)}
    assert {k["unlabelled_size"] for k in seen} == {len(trainer.data.unlabelled_images)}


def test_unlabelled_weight_ramps_to_the_final_weight_asked_for(tmp_path):
    # warm-up over 2 epochs, ending at 0.3: each step passes 0.3 * (its ramp weight) to the program
    config = tiny_config(epochs=1, warmup_epochs=2, unlabelled_weight=0.3)
    trainer = prepare_trainer(config, demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    seen = []
    step = trainer.objective.svi.step
    trainer.objective.svi.step = lambda *args, **kwargs: seen.append(kwargs) or step(*args, **kwargs)
    trainer.train_epoch()
    trainer.epoch = 2  # past the ramp
    trainer.train_epoch()
    n = trainer.steps_per_epoch
    ramp = [0.3 * (i + 1) / (2 * n) for i in range(n)]
    assert [k["unlabelled_weight"] for k in seen] == pytest.approx(ramp + [0.3] * n)
    assert [k["kl_weight"] for k in seen][-1] == 1.0  # the KL warm-up is not capped


def test_the_default_unlabelled_weight_ends_at_n_l_over_n_u(tmp_path):
    """batch-means (the default): past the ramp each step's unlabelled term weighs N_l / N_u of the run's data,
    and metrics.csv records that weight."""
    config = tiny_config(epochs=1, warmup_epochs=0.5)
    trainer = prepare_trainer(config, demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    n_l, n_u = len(trainer.data.labelled_labels), len(trainer.data.unlabelled_images)
    seen = []
    step = trainer.objective.svi.step
    trainer.objective.svi.step = lambda *args, **kwargs: seen.append(kwargs) or step(*args, **kwargs)
    trainer.fit()
    assert seen[-1]["unlabelled_weight"] == pytest.approx(n_l / n_u) and n_l < n_u
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        assert float(list(csv.DictReader(handle))[-1]["unlabelled_weight"]) == pytest.approx(n_l / n_u, rel=1e-4)


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan")])
def test_a_non_positive_unlabelled_weight_is_a_clear_error(tmp_path, weight):
    with pytest.raises(InputError, match="unlabelled_weight: expected (a value above 0|a finite number), got"):
        prepare_trainer(tiny_config(unlabelled_weight=weight), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)


def test_model_options_default_to_the_paper_s_uniform_prior_and_gaussian_likelihood():
    defaults = {"likelihood": "gaussian", "learn_class_prior": False, "prior_weighted_labels": False}
    assert model_options_for("adgm") == defaults
    assert model_options_for("supervised") == defaults
    assert model_options_for("adgm", "uniform", "equal", "discretized-logistic") == {
        "learn_class_prior": False, "prior_weighted_labels": False, "likelihood": "discretized-logistic"}  # fmt: skip
    with pytest.raises(InputError, match="class prior: expected one of uniform, learned or NAME=P,NAME=P shares, got 'flat'"):
        model_options_for("adgm", "flat")
    with pytest.raises(InputError, match="label weights: expected one of prior, equal, got 'none'"):
        model_options_for("adgm", label_weights="none")
    # a Bernoulli needs binary images, which a run from grey levels does not make; the grey-level one is retired
    for likelihood in ("bernoulli", "bernoulli-grey"):
        with pytest.raises(InputError, match=f"likelihood: expected one of gaussian, discretized-logistic, got '{likelihood}'"):
            model_options_for("adgm", likelihood=likelihood)
    with pytest.raises(InputError, match="likelihood 'discretized-logistic': the supervised baseline .* has no p\\(x\\|z,y\\)"):
        model_options_for("supervised", likelihood="discretized-logistic")


def test_known_class_shares_become_a_fixed_prior_in_the_task_s_class_order(tmp_path):
    options = model_options_for("adgm", "abnormal=0.75, normal=0.25")
    assert options == {"learn_class_prior": False, "prior_weighted_labels": False,
                       "likelihood": "gaussian", "class_prior": {"abnormal": 0.75, "normal": 0.25}}  # fmt: skip
    trainer = prepare_trainer(tiny_config(task="2class"), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options={**SMALL_MODEL, **options})
    assert trainer.data.class_names == ("normal", "abnormal")
    torch.testing.assert_close(trainer.model.prior_probs(), torch.tensor([0.25, 0.75]))
    assert trainer.model.class_prior_logits is None and trainer.model.config["class_prior"] == [0.25, 0.75]


@pytest.mark.parametrize(
    "text, message",
    [
        ("normal=0.3,abnormal=0.6", "the shares must sum to 1, they sum to 0.9"),
        ("normal=0.3,opacity=0.7", "expected a share for each of normal, abnormal; unknown: opacity; missing: abnormal"),
        ("normal=1,abnormal=0", "the share of 'normal' must lie strictly between 0 and 1, got 1"),
        ("normal=0.3,normal=0.7", "'normal' given twice"),
        ("=0.3,abnormal=0.7", "expected NAME=PROBABILITY pairs such as normal=0.26,abnormal=0.74, got '=0.3'"),
        ("normal=0.3,abnormal=most", "expected NAME=PROBABILITY pairs such as normal=0.26,abnormal=0.74, got 'abnormal=most'"),
    ],
)
def test_bad_known_class_shares_are_clear_errors(tmp_path, text, message):
    with pytest.raises(InputError, match="class prior: " + message):
        prepare_trainer(tiny_config(task="2class"), demo=TINY_DEMO, run_dir=tmp_path / "run",
                        model_options={**SMALL_MODEL, **model_options_for("adgm", text)})  # fmt: skip


@pytest.mark.parametrize("label_weights, expected_weights", [("prior", [0.5, 1.5]), ("equal", [1.0, 1.0])])
def test_supervised_loss_weights_each_label_by_k_times_a_known_prior(tmp_path, label_weights, expected_weights):
    options = {**SMALL_MODEL, **model_options_for("supervised", "normal=0.25,abnormal=0.75", label_weights)}
    trainer = prepare_trainer(tiny_config(task="2class", method="supervised"), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=options)
    model = trainer.model.train()
    x = torch.rand(6, 1, 28, 28)
    y = torch.tensor([0, 1, 1, 0, 1, 1])
    torch.manual_seed(11)  # the same dropout masks and noise of a as the step below draws
    a_loc, a_scale = model.aux_encoder(x)
    per_image = torch.nn.functional.cross_entropy(model.classifier(x, a=a_loc + a_scale * torch.randn_like(a_loc)), y, reduction="none")
    expected = float((per_image.detach() * torch.tensor(expected_weights)[y]).mean())
    torch.manual_seed(11)
    assert trainer.objective.step(Batch(x, y), progress=1.0) == pytest.approx(expected, rel=1e-5)


def test_time_limit_stops_between_epochs_and_resume_goes_on(tmp_path):
    report, run_dir = train(tiny_config(epochs=3, max_seconds=1e-6), demo=TINY_DEMO, run_dir=tmp_path / "run",
                            model_options=SMALL_MODEL)  # fmt: skip
    assert [int(r["epoch"]) for r in read_rows(run_dir)] == [1]  # the first epoch always runs
    assert report["epochs"] == 1 and (run_dir / "report.json").is_file()
    resume(run_dir, epochs=2)  # resume takes last.pt's config: the limit still holds
    assert [int(r["epoch"]) for r in read_rows(run_dir)] == [1]
    resume(run_dir, epochs=2, max_seconds=math.inf)
    assert [int(r["epoch"]) for r in read_rows(run_dir)] == [1, 2]


def test_learned_class_prior_has_its_own_rate_and_travels_with_the_checkpoint(tmp_path):
    config = tiny_config(epochs=2, lr=1e-3, class_prior_lr=0.05)
    options = {**SMALL_MODEL, "learn_class_prior": True}
    trainer = prepare_trainer(config, demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=options)
    assert trainer.config.class_prior == "learned"  # the model option, taken into the settings
    start = trainer.model.prior_probs().detach().clone()
    trainer.train_epoch()
    store = pyro.get_param_store()
    groups = {store.param_name(p): o.param_groups[0] for p, o in trainer.objective.optimizer.optim_objs.items()}
    prior = [g for name, g in groups.items() if name.endswith("class_prior_logits")]
    assert [(g["lr"], g["weight_decay"]) for g in prior] == [(0.05, 0.0)]
    others = {(g["lr"], g["weight_decay"]) for name, g in groups.items() if not name.endswith("class_prior_logits")}
    assert others == {(1e-3, config.weight_decay)}
    moved = trainer.model.prior_probs().detach()
    assert moved.sum().item() == pytest.approx(1.0) and (moved - start).abs().max() > 1e-3

    report, run_dir = train(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "saved", model_options=options)
    recorded = [float(v) for v in read_rows(run_dir)[-1]["class_prior"].split()]
    model, _ = load_model(run_dir / "best.pt", "cpu")  # rebuilt from the saved config, learned prior included
    assert model.config["learn_class_prior"]
    assert model.prior_probs().tolist() == pytest.approx(recorded, abs=1e-4)
    assert recorded != pytest.approx([1 / 3] * 3, abs=1e-4)


def test_learned_class_prior_is_refused_for_the_supervised_baseline(tmp_path):
    with pytest.raises(InputError, match="a learned p\\(y\\) is trained by the unlabelled term"):
        prepare_trainer(tiny_config(method="supervised"), demo=TINY_DEMO, run_dir=tmp_path / "run",
                        model_options={**SMALL_MODEL, "learn_class_prior": True})  # fmt: skip


def test_checkpoint_of_the_retired_sdgm_is_refused_in_one_line_and_an_adgm_s_variant_key_is_dropped(tmp_path):
    _, run_dir = train(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    state = load_checkpoint(run_dir / "best.pt")
    state["model_config"]["variant"] = "adgm"  # as checkpoints written while the SDGM existed say
    torch.save(state, tmp_path / "old.pt")
    model, _ = load_model(tmp_path / "old.pt", device="cpu")
    assert "variant" not in model.config
    state["model_config"]["variant"] = "sdgm"
    torch.save(state, tmp_path / "sdgm.pt")
    with pytest.raises(InputError, match="sdgm.pt: holds the 'sdgm' variant, retired after commit [0-9a-f]{7}"):
        load_model(tmp_path / "sdgm.pt", device="cpu")


def test_the_step_passes_alpha_and_the_plate_sizes_of_j_alpha(tmp_path):
    """alpha = beta * (N_l + N_u) / N_l, and each plate is as large as the images its batch stands for."""
    trainer = prepare_trainer(tiny_config(beta=2.5), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    n_l, n_u = len(trainer.data.labelled_labels), len(trainer.data.unlabelled_images)
    assert n_l == 15 and n_u > 0
    kwargs = trainer.objective.program_arguments(kl_weight=0.5, unlabelled_weight=0.75)
    assert kwargs["alpha"] == pytest.approx(2.5 * (n_l + n_u) / n_l)
    assert kwargs["likelihood_weight"] == 1.0  # likelihood_reduction "sum": the bound's log p(x|z,y)
    batch = next(trainer._batches(torch.Generator().manual_seed(0)))
    x_l, y_l, x_u = batch.x_labelled, batch.y_labelled, batch.x_unlabelled
    trainer.model.eval()  # deterministic networks: the factor can be computed again below
    guide = pyro.poutine.trace(trainer.model.semi_supervised_guide).get_trace(x_l, y_l, x_u, **kwargs)
    model = pyro.poutine.trace(pyro.poutine.replay(trainer.model.semi_supervised_model, trace=guide)).get_trace(x_l, y_l, x_u, **kwargs)
    plates = {frame.name: frame for node in model.nodes.values() if node["type"] == "sample" for frame in node["cond_indep_stack"]}
    assert (plates["labelled_data"].full_size, plates["labelled_data"].size) == (n_l, len(x_l))
    assert (plates["unlabelled_data"].full_size, plates["unlabelled_data"].size) == (n_u, len(x_u))
    assert model.nodes["labelled/x"]["scale"] == pytest.approx(n_l / len(x_l))
    assert model.nodes["unlabelled/x"]["scale"] == pytest.approx(0.75 * n_u / len(x_u))
    # the classification factor is alpha * log q(y|a,x) of the labelled images
    a = guide.nodes["labelled/a"]["value"]
    log_q = (torch.nn.functional.one_hot(y_l, 3) * trainer.model.classifier(x_l, a=a).log_softmax(-1)).sum(-1)
    torch.testing.assert_close(model.nodes["labelled/y_aux"]["fn"].log_factor, kwargs["alpha"] * log_q)


def test_a_batch_names_the_positions_of_its_images_in_the_training_data(tmp_path):
    """Batch.labelled_index / unlabelled_index point at the very images and labels of the step, and an epoch's
    unlabelled positions cover the unlabelled images once each."""
    trainer = prepare_trainer(tiny_config(), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    data, seen = trainer.data, []
    for batch in trainer._batches(torch.Generator().manual_seed(0)):
        assert torch.equal(batch.y_labelled, data.labelled_labels[batch.labelled_index])
        assert torch.equal(batch.unlabelled_images, data.unlabelled_images[batch.unlabelled_index])
        seen.append(batch.unlabelled_index)
    assert sorted(torch.cat(seen).tolist()) == list(range(len(data.unlabelled_images)))


def test_the_mean_likelihood_reduction_divides_log_p_x_alone_by_the_pixel_values(tmp_path):
    """likelihood_reduction mean: log p(x|z,y) of both batches weighs 1 / (C S S) of its plate's scale; the other
    sites keep theirs, and the bound that metrics.csv reports is still the sum over the pixels."""
    trainer = prepare_trainer(tiny_config(likelihood_reduction="mean"), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    pixels = trainer.model.in_channels * trainer.model.image_size**2
    n_l, n_u = len(trainer.data.labelled_labels), len(trainer.data.unlabelled_images)
    kwargs = trainer.objective.program_arguments(kl_weight=1.0, unlabelled_weight=0.75)
    assert kwargs["likelihood_weight"] == pytest.approx(1 / pixels)
    batch = next(trainer._batches(torch.Generator().manual_seed(0)))
    x_l, y_l, x_u = batch.x_labelled, batch.y_labelled, batch.x_unlabelled
    guide = pyro.poutine.trace(trainer.model.semi_supervised_guide).get_trace(x_l, y_l, x_u, **kwargs)
    model = pyro.poutine.trace(pyro.poutine.replay(trainer.model.semi_supervised_model, trace=guide)).get_trace(x_l, y_l, x_u, **kwargs)
    assert model.nodes["labelled/x"]["scale"] == pytest.approx(n_l / len(x_l) / pixels)
    assert model.nodes["unlabelled/x"]["scale"] == pytest.approx(0.75 * n_u / len(x_u) / pixels)
    assert model.nodes["labelled/z"]["scale"] == pytest.approx(n_l / len(x_l))
    assert model.nodes["unlabelled/a"]["scale"] == pytest.approx(0.75 * n_u / len(x_u))
    # the reported bound: the same images give the same number under either reduction
    summed = prepare_trainer(tiny_config(), demo=TINY_DEMO, run_dir=tmp_path / "sum", model_options=SMALL_MODEL)
    summed.model.load_state_dict(trainer.model.state_dict())
    images, labels = trainer.data.labelled_images, trainer.data.labelled_labels
    pyro.set_rng_seed(0)
    mean_bound = trainer.objective.bound_per_image(images, labels)
    pyro.set_rng_seed(0)
    assert mean_bound == pytest.approx(summed.objective.bound_per_image(images, labels), rel=1e-5)
    assert mean_bound < -pixels * 0.01  # a sum over the pixel values, not their mean


@pytest.mark.parametrize("decoupled", [True, False])
def test_a_step_without_data_gradient_shrinks_every_weight_alike_under_both_methods(tmp_path, decoupled):
    """Decoupled decay: each weight is multiplied by 1 - lr * weight_decay, whichever method; Adam's coupled decay
    is normalised by its own moments instead, so its shrinkage differs from weight to weight."""
    lr, decay = 1e-2, 0.5
    factors = {}
    for method in ("adgm", "supervised"):
        config = tiny_config(method=method, lr=lr, weight_decay=decay, decoupled_weight_decay=decoupled)
        trainer = prepare_trainer(config, demo=TINY_DEMO, run_dir=tmp_path / method, model_options=SMALL_MODEL)
        params = [p for p in trainer.model.classifier.parameters() if p.dim() > 1]  # weights both methods train
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.zeros_like(p)
        if method == "adgm":
            pyro.module(trainer.model.pyro_name, trainer.model)  # the parameters as SVI registers them
            trainer.objective.optimizer(params)
        else:
            trainer.objective.optimizer.step()
        factors[method] = torch.cat([(p.detach() / b).flatten() for p, b in zip(params, before)])
    if decoupled:
        for method, factor in factors.items():
            torch.testing.assert_close(factor, torch.full_like(factor, 1 - lr * decay), msg=method)
    else:
        assert factors["adgm"].std() > 1e-3 and factors["supervised"].std() > 1e-3


def test_a_run_leaves_the_denormal_flush_and_the_warning_filters_as_it_found_them(tmp_path):
    import warnings

    from pyro_adgm.device import denormals_flushed

    filters = list(warnings.filters)
    for flushed in (False, True):
        torch.set_flush_denormal(flushed)
        try:
            train(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / f"run-{flushed}", model_options=SMALL_MODEL)
            assert denormals_flushed() is flushed
        finally:
            torch.set_flush_denormal(False)
    assert warnings.filters == filters


def test_the_loop_has_no_branch_on_the_method_and_stays_short():
    from pathlib import Path

    import pyro_adgm.training

    source = Path(pyro_adgm.training.__file__).read_text()
    assert "method ==" not in source and "method !=" not in source
    assert len(source.splitlines()) < 300


def version_1(state: dict) -> dict:
    """A checkpoint as written before objectives: version 1, the optimiser state under optimizer_state, and train
    settings with the fields retired since."""
    state = {k: v for k, v in state.items() if k != "objective_state"}
    train_config = {k: v for k, v in state["train_config"].items() if k not in ("data", "demo", "image_size", "dropout")}
    return {**state, "version": 1, "optimizer_state": {}, "train_config": {**train_config, "lr_schedule": "constant"},
            "model_config": {**state["model_config"], "variant": "adgm"}}  # fmt: skip


def test_a_version_1_checkpoint_is_evaluated_but_not_resumed_and_says_so_in_one_line(tmp_path):
    from pyro_adgm.runs import evaluate

    _, run_dir = train(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    for name in ("best.pt", "last.pt"):
        torch.save(version_1(load_checkpoint(run_dir / name)), run_dir / name)
    report = evaluate(run_dir / "best.pt", split="val", device="cpu")
    assert report["n"] > 0
    with pytest.raises(InputError, match=r"last\.pt: a version-1 checkpoint, .* resume it at commit [0-9a-f]{7}$"):
        resume(run_dir, epochs=2)
    state = load_checkpoint(run_dir / "best.pt")
    torch.save({**state, "version": 7}, tmp_path / "future.pt")
    with pytest.raises(InputError, match=r"future\.pt: checkpoint version 7; this pyro-adgm reads versions 1, 2$"):
        load_model(tmp_path / "future.pt")


def test_the_ranks_batches_are_shards_of_the_batch_one_process_draws_with_n_times_the_batch(tmp_path):
    from pyro_adgm.distributed import World

    config = tiny_config(batch_size=4, augment="none")  # no random transform: the images can be compared
    make = lambda config, world: prepare_trainer(config, demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL,  # noqa: E731
                                                 world=world)  # fmt: skip
    ranks = [make(config, World(rank=r, world_size=2)) for r in range(2)]
    whole = make(replace(config, batch_size=8), World())
    n_l, n_u = len(whole.data.labelled_labels), len(whole.data.unlabelled_images)
    assert ranks[0].steps_per_epoch == ranks[1].steps_per_epoch == whole.steps_per_epoch == math.ceil(n_u / 8)
    shards = [list(trainer._batches(torch.Generator().manual_seed(3))) for trainer in ranks]
    for step, batch in enumerate(whole._batches(torch.Generator().manual_seed(3))):
        parts = [shards[0][step], shards[1][step]]
        assert [len(p.y_labelled) for p in parts] == [4, 4] and len(batch.y_labelled) == min(8, n_l)
        torch.testing.assert_close(torch.cat([p.x_labelled for p in parts]), batch.x_labelled, rtol=0, atol=0)
        assert torch.equal(torch.cat([p.y_labelled for p in parts]), batch.y_labelled)
        torch.testing.assert_close(torch.cat([p.x_unlabelled for p in parts]), batch.x_unlabelled, rtol=0, atol=0)
        assert abs(len(parts[0].x_unlabelled) - len(parts[1].x_unlabelled)) <= 1
    # every rank's objective keeps the data set's plate sizes: its loss is a full-data-scale estimate
    assert {t.objective.sizes for t in ranks} == {whole.objective.sizes}


@pytest.mark.parametrize("method", ["adgm", "supervised"])
def test_bf16_trains_on_the_cpu_and_is_recorded(tmp_path, method):
    _, run_dir = train(tiny_config(epochs=1, precision="bf16", method=method), demo=TINY_DEMO, run_dir=tmp_path / "run",
                       model_options=SMALL_MODEL)  # fmt: skip
    (row,) = read_rows(run_dir)
    assert math.isfinite(float(row["train_loss"])) and math.isfinite(float(row["val_accuracy"]))
    assert json.loads((run_dir / "config.json").read_text())["train"]["precision"] == "bf16"
    assert load_checkpoint(run_dir / "last.pt")["train_config"]["precision"] == "bf16"
    with pytest.raises(InputError, match="^precision: expected one of fp32, bf16, got 'fp16'$"):
        tiny_config(precision="fp16")


def test_the_adgm_step_checks_the_distributions_on_its_first_step_only(tmp_path):
    from pyro.infer.util import is_validation_enabled

    from pyro_adgm.distributed import DataParallelOptim

    trainer = prepare_trainer(tiny_config(epochs=1), demo=TINY_DEMO, run_dir=tmp_path / "run", model_options=SMALL_MODEL)
    assert isinstance(trainer.objective.optimizer, DataParallelOptim)
    checked = []
    step = trainer.objective.svi.step
    trainer.objective.svi.step = lambda *args, **kwargs: checked.append(is_validation_enabled()) or step(*args, **kwargs)
    trainer.train_epoch()
    assert checked == [True] + [False] * (trainer.steps_per_epoch - 1) and trainer.steps_per_epoch > 1
    assert is_validation_enabled()  # restored after each step


def test_epoch_summary_names_only_what_the_objective_measured():
    from pyro_adgm.metrics_file import epoch_summary

    adgm = {"epoch": 3, "train_loss": 12.5, "unlabelled_bound": -681.79, "unlabelled_bits_per_dim": 8.4213, "train_accuracy": 0.82,
            "val_accuracy": 0.607, "kl_weight": 0.1, "class_prior": "0.5000 0.5000", "seconds": 36.44}  # fmt: skip
    assert epoch_summary(adgm) == ("epoch 3: loss 12.5, bound -681.79 nats/image (8.4213 bits/dim), train acc 0.820, "
                                   "val acc 0.607, KL weight 0.100, p(y) 0.5000 0.5000, 36.4s")  # fmt: skip
    supervised = {**adgm, "unlabelled_bound": math.nan, "unlabelled_bits_per_dim": math.nan, "kl_weight": math.nan}
    assert epoch_summary(supervised) == "epoch 3: loss 12.5, train acc 0.820, val acc 0.607, 36.4s"
