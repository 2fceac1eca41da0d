"""`pyro-adgm train --config FILE`: a run's config.json or a hand-written TOML/JSON file of settings, the options given
over them; bad files end in one line naming the file and the key."""

import csv
import json

import pytest
from click.testing import CliRunner

from cli.main import app
from data_tools.errors import InputError
from pyro_adgm.config import TrainConfig, load_config, read_config_file

TINY = {"epochs": 1, "batch_size": 16, "device": "cpu", "task": "3class", "labels_per_class": 4,
        "demo": {"n_images": 90, "image_size": 28}, "architecture": {"a_dim": 8, "z_dim": 8, "channels": [8, 16], "hidden": [32]}}  # fmt: skip


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_a_run_s_config_json_re_runs_it_and_options_override_it(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    invoke("train", "--config", tmp_path / "tiny.json", "--out", tmp_path / "first")
    first = json.loads((tmp_path / "first" / "config.json").read_text())
    assert first["version"] == 2 and first["train"]["architecture"]["a_dim"] == 8 and first["model"]["a_dim"] == 8
    # the same settings: the same run, number for number
    invoke("train", "--config", tmp_path / "first" / "config.json", "--out", tmp_path / "again")
    assert rows(tmp_path / "again") == rows(tmp_path / "first")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["train"] == first["train"] and again["model"] == first["model"]
    # an option given overrides the file
    invoke("train", "--config", tmp_path / "first" / "config.json", "--seed", "3", "--lr", "0.001", "--out", tmp_path / "other")
    other = json.loads((tmp_path / "other" / "config.json").read_text())["train"]
    assert {k: v for k, v in other.items() if k not in ("seed", "lr")} == {k: v for k, v in first["train"].items() if k not in ("seed", "lr")}
    assert (other["seed"], other["lr"]) == (3, 0.001)


def test_a_hand_written_toml_and_a_train_table_are_read(tmp_path):
    (tmp_path / "flat.toml").write_text('lr = 3e-4\nbetas = [0.5, 0.9]\naugment_flip = false\nwarmup_epochs = 2\n')
    config = load_config(tmp_path / "flat.toml", {"seed": 4})
    assert (config.lr, config.betas, config.augment_flip, config.seed) == (3e-4, (0.5, 0.9), False, 4)
    assert isinstance(config.warmup_epochs, float)  # an integer where a number is expected
    (tmp_path / "table.toml").write_text('[train]\nmethod = "supervised"\n')
    assert load_config(tmp_path / "table.toml").method == "supervised"
    assert load_config() == TrainConfig()


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.toml", "learning_rate = 1\n", "bad.toml: unknown setting 'learning_rate'"),
        ("bad.toml", '[train]\nlr = 1\n[optimiser]\nlr = 2\n', "bad.toml: unknown section 'optimiser'"),
        ("bad.json", '{"train": {"epochs": "many"}}', "bad.json: epochs: expected an integer, got 'many'"),
        ("bad.json", "[1, 2]", "bad.json: expected a table of settings"),
        ("bad.json", "{", "bad.json: not a JSON file"),
        ("config.json", '{"train": {"lr": 1}, "model": {"a_dim": 8}}', "config.json: a run's config.json of version 1"),
        ("bad.toml", 'labelled_weighting = "balanced"\n', "bad.toml: setting 'labelled_weighting' was retired"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file_and_the_key(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as error:
        load_config(tmp_path / name)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith(str(tmp_path / name))


def test_read_config_file_returns_the_train_section_of_a_run_s_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"version": 2, "train": {"lr": 0.5}, "model": {}, "class_names": [], "data": {}}))
    assert read_config_file(tmp_path / "config.json") == {"lr": 0.5}


def test_precision_is_a_setting_of_files_and_options_and_a_file_without_it_is_fp32(tmp_path):
    (tmp_path / "bf16.toml").write_text('precision = "bf16"\n')
    assert load_config(tmp_path / "bf16.toml").precision == "bf16"
    assert load_config(tmp_path / "bf16.toml", {"precision": "fp32"}).precision == "fp32"
    older = {k: v for k, v in TrainConfig().to_dict().items() if k != "precision"}  # a run's settings from before the field
    assert TrainConfig.from_dict(older).precision == "fp32"
    (tmp_path / "fp8.toml").write_text('precision = "fp8"\n')
    with pytest.raises(InputError, match="fp8.toml: precision: expected one of fp32, bf16, got 'fp8'$"):
        load_config(tmp_path / "fp8.toml")
