"""The moving average of the weights: its arithmetic, swapping it in and out, and its place in checkpoints."""

import csv

import pytest
import torch
from conftest import SMALL_MODEL
from torch import nn

from pyro_adgm.averaging import WeightAverage
from pyro_adgm.checkpoint import load_checkpoint
from pyro_adgm.runs import evaluate, train
from pyro_adgm.training import TrainConfig


def test_average_follows_the_documented_recursion_and_skips_integer_buffers():
    module = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(module, decay=0.9)
    expected = module[0].weight.detach().clone()
    for step in range(1, 30):
        with torch.no_grad():
            module[0].weight.add_(torch.randn_like(module[0].weight))
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * module[0].weight.detach()
        average.update(module)
    torch.testing.assert_close(average.shadow["0.weight"], expected)
    assert "1.num_batches_tracked" not in average.shadow  # integer buffers are left alone
    assert average.current_decay() == pytest.approx(30 / 39)  # still warming up: min(0.9, (1 + n) / (10 + n))


def test_applied_swaps_the_average_in_and_restores_the_weights():
    module = nn.Linear(4, 4)
    average = WeightAverage(module, decay=0.5)
    with torch.no_grad():
        module.weight.mul_(3.0)
    trained = module.weight.detach().clone()
    with average.applied(module):
        torch.testing.assert_close(module.weight, average.shadow["weight"])
        assert not torch.equal(module.weight, trained)
    torch.testing.assert_close(module.weight, trained)
    state = average.state_dict()
    other = WeightAverage(nn.Linear(4, 4), decay=0.5)
    other.load_state_dict(state)
    assert other.updates == average.updates
    torch.testing.assert_close(other.shadow["weight"], average.shadow["weight"])


def test_decay_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(2, 2), decay=1.0)


def test_checkpoints_hold_the_averaged_weights_and_those_are_what_was_evaluated(tmp_path):
    config = TrainConfig(task="2class", labels_per_class=5, epochs=1, batch_size=16, warmup_epochs=2, device="cpu", seed=1)
    report, run_dir = train(config, demo={"n_images": 120, "image_size": 28, "seed": 2}, run_dir=tmp_path / "run",
                            model_options=SMALL_MODEL)  # fmt: skip
    state = load_checkpoint(run_dir / "best.pt")
    assert state["average_state"]["updates"] > 0
    name = next(k for k, v in state["model_state"].items() if v.is_floating_point() and k.endswith("weight"))
    assert not torch.equal(state["model_state"][name], state["train_model_state"][name])
    # the checkpoint's model_state, evaluated afresh, gives the validation accuracy logged for that epoch
    logged = float(next(csv.DictReader(open(run_dir / "metrics.csv")))["val_accuracy"])
    assert evaluate(run_dir / "best.pt", device="cpu")["accuracy"] == pytest.approx(logged, abs=1e-6)


def test_loading_an_average_of_another_model_is_refused():
    average = WeightAverage(nn.Linear(2, 2), decay=0.9)
    with pytest.raises(ValueError, match="missing"):
        average.load_state_dict({"updates": 3, "shadow": {"weight": torch.zeros(2, 2)}})
