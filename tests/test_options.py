"""One source of truth for the train settings: every TrainConfig field is documented in its docstring and is either a
`pyro-adgm train` option or marked config-only, every train option is a field (but for where the settings come from
and where the run goes), and the option list stays short."""

from dataclasses import fields

import click

from cli.main import NOT_SETTINGS, app
from pyro_adgm.config import TrainConfig, default_of, setting_help

MOST_OPTIONS = 18


def train_options() -> dict[str, click.Option]:
    return {p.name: p for p in app.commands["train"].params if isinstance(p, click.Option) and p.name != "help"}


def test_every_field_is_an_option_or_config_only_and_every_option_is_a_field():
    options = train_options()
    for f in fields(TrainConfig):
        offered = f.metadata.get("cli", True)
        assert offered == (f.name in options), f"{f.name}: an option without metadata cli False, or config-only but offered"
    settings = set(options) - set(NOT_SETTINGS)
    assert settings <= {f.name for f in fields(TrainConfig)}, sorted(settings - {f.name for f in fields(TrainConfig)})


def test_every_field_is_documented_once_and_the_options_show_that_text_and_default():
    helps = setting_help()
    assert list(helps) == [f.name for f in fields(TrainConfig)]  # every field, in order, no other name
    for name, option in train_options().items():
        if name in NOT_SETTINGS:
            continue
        assert option.help == helps[name] and helps[name], name
        assert option.default == default_of(name), name


def test_the_train_command_has_at_most_eighteen_options():
    names = set(train_options())
    assert len(names) <= MOST_OPTIONS, sorted(names)
    assert {"config_file", "tensorboard", "beta", "warmup_epochs", "lr", "epochs", "precision"} <= names
    assert not {"weight_decay", "dropout"} & names  # the paper's values, not measured otherwise: config-only


def test_precision_is_an_option_with_the_precisions_the_step_knows():
    from pyro_adgm.precision import PRECISIONS

    option = train_options()["precision"]
    assert option.opts == ["--precision"] and tuple(option.type.choices) == PRECISIONS == ("fp32", "bf16")
    assert option.default == "fp32"
