"""Bad files end a command with one line: ``Error: FILE: what was wrong and what was expected``.

Each case runs the command in-process through click.testing.CliRunner and checks that the whole output is that
one line, that it names the file, and that it passes on no advice to load a file unsafely (PyTorch's and NumPy's
own messages suggest ``weights_only=False`` or ``allow_pickle``, which would run code from the file).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.errors import one_line
from cli.main import app

UNSAFE_ADVICE = ("weights_only", "allow_pickle", "trust", "unsafe", "pickle.load")


class NeedsCode:
    """An object that only its class's code can rebuild: ``weights_only=True`` refuses to load it."""


def run_cli(*args) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(result.exception, SystemExit), f"a traceback, not an error line: {result.exception!r}\n{result.output}"
    return result.exit_code, result.output.splitlines(), result.output


def assert_one_error_line(args, file_name: str, *fragments: str) -> str:
    code, lines, output = run_cli(*args)
    assert code == 1, output
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{output}"
    (line,) = lines
    assert line.startswith("Error: "), output
    assert file_name in line, output
    for fragment in fragments:
        assert fragment in line, output
    for advice in UNSAFE_ADVICE:
        assert advice not in line.lower(), output
    return line


@pytest.fixture
def corrupt_checkpoint(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a checkpoint\n" * 10)
    return path


@pytest.fixture
def code_checkpoint(tmp_path):
    path = tmp_path / "code.pt"
    torch.save({"version": 1, "model_state": collections.OrderedDict(), "extra": NeedsCode()}, path)
    return path


@pytest.fixture
def foreign_checkpoint(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, path)  # readable, but not written by pyro-adgm
    return path


COMMANDS = {
    "evaluate": lambda ckpt: ["evaluate", "--checkpoint", ckpt],
    "sample": lambda ckpt: ["sample", "--checkpoint", ckpt, "--class", "normal"],
    "predict": lambda ckpt: ["predict", "--checkpoint", ckpt, ckpt],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_corrupt_checkpoint(command, corrupt_checkpoint):
    assert_one_error_line(COMMANDS[command](corrupt_checkpoint), "corrupt.pt", "not a readable pyro-adgm checkpoint",
                          "expected")  # fmt: skip


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_checkpoint_holding_objects_that_need_code(command, code_checkpoint):
    line = assert_one_error_line(COMMANDS[command](code_checkpoint), "code.pt", "not a readable pyro-adgm checkpoint",
                                 "expected")  # fmt: skip
    assert "running code" in line


def test_checkpoint_of_another_program(foreign_checkpoint):
    assert_one_error_line(COMMANDS["evaluate"](foreign_checkpoint), "foreign.pt", "not a pyro-adgm checkpoint", "expected")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_checkpoint(command, tmp_path):
    missing = tmp_path / "missing.pt"
    assert_one_error_line(COMMANDS[command](missing), "missing.pt", "checkpoint not found")


def test_resume_from_a_run_whose_last_checkpoint_is_corrupt(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    CliRunner().invoke(app, ["train", "--task", "2class", "--labels", "5", "--config", str(Path(__file__).with_name("fast_cli.toml")),
                             "--out", str(run)])  # fmt: skip
    (run / "last.pt").write_bytes(b"truncated")
    assert_one_error_line(["train", "--resume", run, "--epochs", "2"], "last.pt", "not a readable pyro-adgm checkpoint")


def test_missing_data_folder(tmp_path):
    assert_one_error_line(["train", "--data", tmp_path / "nothere", "--epochs", "1"], "nothere",
                          "not a prepared dataset folder")  # fmt: skip


def test_empty_data_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error_line(["train", "--data", empty, "--epochs", "1"], "empty", "missing images.npy", "expected")


def prepared_demo(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["prepare", "demo", "--out", str(out), "--n-images", "60", "--size", "16"])
    assert result.exit_code == 0, result.output
    return out


def test_data_folder_with_broken_metadata(tmp_path):
    data = prepared_demo(tmp_path)
    (data / "meta.json").write_text("{ not json")
    assert_one_error_line(["train", "--data", data, "--epochs", "1"], "meta.json", "not valid JSON")


def test_data_folder_of_another_format_version(tmp_path):
    data = prepared_demo(tmp_path)
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "format_version": 999}))
    assert_one_error_line(["train", "--data", data, "--epochs", "1"], "meta.json", "format_version", "expected")


def test_data_folder_with_a_corrupt_image_array(tmp_path):
    data = prepared_demo(tmp_path)
    (data / "images.npy").write_bytes(b"garbage")
    assert_one_error_line(["train", "--data", data, "--epochs", "1"], "images.npy", "expected")


def test_data_folder_for_prepare_folder_without_classes(tmp_path):
    root = tmp_path / "scans"
    root.mkdir()
    (root / "a.png").write_bytes(b"")
    assert_one_error_line(["prepare", "folder", root, "--out", tmp_path / "out"], "scans", "expected")


def test_missing_npz_file(tmp_path):
    assert_one_error_line(["prepare", "medmnist", tmp_path / "no.npz", "--out", tmp_path / "out"], "no.npz", "expected")


def test_npz_file_that_is_not_one(tmp_path):
    bad = tmp_path / "bad.npz"
    np.save(tmp_path / "x.npy", np.zeros(3))
    bad.write_bytes((tmp_path / "x.npy").read_bytes()[:20])
    assert_one_error_line(["prepare", "medmnist", bad, "--out", tmp_path / "out"], "bad.npz")


def test_messages_are_joined_onto_one_line():
    assert one_line("first\n\n  second  \nthird\n") == "first; second; third"


def test_prepare_leaves_a_folder_that_is_not_a_prepared_dataset_alone(tmp_path):
    kept = tmp_path / "notes"
    kept.mkdir()
    (kept / "mine.txt").write_text("not a dataset")
    assert_one_error_line(["prepare", "demo", "--out", kept, "--n-images", "60", "--size", "16"], "notes",
                          "not a prepared dataset", "no meta.json")  # fmt: skip
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]


def test_prepare_refuses_an_output_folder_that_holds_its_inputs(tmp_path):
    from PIL import Image

    source = tmp_path / "scans"
    for name in ("normal", "abnormal"):
        (source / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((20, 20), 40 * i, dtype=np.uint8)).save(source / name / f"{i}.png")
    for out in (source, tmp_path):
        assert_one_error_line(["prepare", "folder", source, "--out", out, "--size", "16"], str(out), "holds the input")
    assert len(list(source.rglob("*.png"))) == 8
    result = CliRunner().invoke(app, ["prepare", "folder", str(source), "--out", str(tmp_path / "ok"), "--size", "16"])
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(app, ["prepare", "folder", str(source), "--out", str(tmp_path / "ok"), "--size", "16", "--force"])
    assert again.exit_code == 0, again.output  # a prepared dataset is replaced


def test_a_run_resumed_from_another_folder_reads_the_data_it_was_trained_on_and_rewrites_its_config(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert CliRunner().invoke(app, ["prepare", "demo", "--out", "data", "--n-images", "60", "--size", "16"]).exit_code == 0
    config = str(Path(__file__).with_name("fast_cli.toml"))
    result = CliRunner().invoke(app, ["train", "--task", "2class", "--labels", "5", "--config", config, "--data", "data",
                                      "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path / "b")
    (tmp_path / "b" / "data").mkdir()  # a folder of that name here must not be read instead
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["train_config"]["data"] == str(tmp_path / "a" / "data")
    resumed = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run"), "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # as older checkpoints hold it: as given
    torch.save({**state, "train_config": {**state["train_config"], "data": "data"}}, tmp_path / "run" / "last.pt")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["epochs"] == 2  # rewritten by the resume
    (tmp_path / "run" / "config.json").write_text('{"train": {"epo')  # damaged
    older = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run"), "--epochs", "3"])
    assert older.exit_code == 0, older.output  # read from the absolute path the checkpoint recorded, not b/data
    train = json.loads((tmp_path / "run" / "config.json").read_text())["train"]  # made whole again
    assert train["epochs"] == 3 and train["data"] == str(tmp_path / "a" / "data")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(app, ["train", "--task", "2class", "--labels", "5", "--config",
                                      str(Path(__file__).with_name("fast_cli.toml")), "--out", str(run)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("change, fragment", [
    (lambda state: state.pop("class_names"), "class_names missing"),
    (lambda state: state.pop("train_config"), "train_config missing"),
    (lambda state: state.update(model_config="adgm"), "model_config missing or not a dict"),
    (lambda state: state.update(class_names=["a"]), "for a model of 2 classes"),
    (lambda state: state["model_config"].update(bogus=1), "model_config does not describe a model"),
])  # fmt: skip
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_checkpoint_with_missing_or_malformed_contents(command, change, fragment, trained_run, tmp_path):
    state = torch.load(trained_run / "best.pt", weights_only=True)
    change(state)
    torch.save(state, tmp_path / "odd.pt")
    assert_one_error_line(COMMANDS[command](tmp_path / "odd.pt"), "odd.pt", fragment)


@pytest.mark.parametrize("args, fragment", [
    (["train", "--labels", "5", "--seed", "-1"], "--seed: expected a value at least 0"),
    (["train", "--labels", "5", "--seed", str(2**32)], "--seed: expected a value at most"),
    (["train", "--labels", "5", "--data", ""], "--data: expected a prepared dataset folder, got an empty path"),
    (["prepare", "demo", "--out", "{tmp}/d", "--size", "100000"], "image_size (--size): expected an integer from 16 to 256"),
    (["prepare", "demo", "--out", "{tmp}/d", "--n-images", "0"], "n_images (--n-images): expected an integer from 3"),
])  # fmt: skip
def test_bad_option_values_are_named(args, fragment, tmp_path):
    assert_one_error_line([a.replace("{tmp}", str(tmp_path)) for a in args], fragment.split(":")[0].split(" ")[0], fragment)


def test_sample_seed_out_of_range(trained_run):
    assert_one_error_line(["sample", "--checkpoint", trained_run / "best.pt", "--class", "normal", "--seed", "-1"], "seed",
                          "expected an integer from 0")  # fmt: skip


@pytest.mark.parametrize("settings, fragment", [
    ({"betas": [0.9, 2.0]}, "betas: expected two numbers in [0, 1)"),
    ({"dropout": 1}, "dropout: expected a value below 1, got 1.0"),
    ({"architecture": {"a_dim": -1}}, "a_dim: expected a positive integer"),
    ({"architecture": {"channels": "abc"}}, "channels: expected positive integers"),
    ({"demo": {"n_images": -5}}, "n_images (--n-images): expected an integer from 3"),
])  # fmt: skip
def test_bad_settings_in_a_config_file(settings, fragment, tmp_path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps(settings))
    assert_one_error_line(["train", "--labels", "5", "--config", config, "--out", tmp_path / "run"], fragment.split(":")[0], fragment)
    assert not (tmp_path / "run").exists()


def test_a_label_csv_that_is_not_text(tmp_path):
    binary = tmp_path / "labels.csv"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    assert_one_error_line(["prepare", "csv", "--csv", binary, "--images", tmp_path, "--out", tmp_path / "d"], "labels.csv",
                          "not a UTF-8 text file")  # fmt: skip


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"])
def test_a_medmnist_file_that_is_not_an_npz(content, tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    assert_one_error_line(["prepare", "medmnist", path, "--out", tmp_path / "d"], "broken.npz", "not a readable .npz file")


def test_an_output_that_cannot_be_written_is_named_not_its_temporary_file(tmp_path):
    from pyro_adgm.checkpoint import atomic_write_bytes

    def refused(tmp):
        raise PermissionError(13, "Permission denied", str(tmp))

    with pytest.raises(OSError) as error:
        atomic_write_bytes(tmp_path / "grid.png", refused)
    assert error.value.filename == str(tmp_path / "grid.png") and "Permission denied" in error.value.strerror
    assert list(tmp_path.iterdir()) == []


def test_a_folder_given_as_a_checkpoint_and_a_missing_run_directory(trained_run, tmp_path):
    assert_one_error_line(["evaluate", "--checkpoint", trained_run], str(trained_run), "a folder; expected a checkpoint file")
    assert_one_error_line(["train", "--resume", tmp_path / "nothere"], "nothere", "run directory not found")
    assert_one_error_line(["train", "--resume", trained_run, "--epochs", "0"], "--epochs", "--epochs: expected a value at least 1")


def test_evaluating_a_checkpoint_whose_dataset_moved_says_to_pass_data(tmp_path):
    data = prepared_demo(tmp_path)
    result = CliRunner().invoke(app, ["train", "--task", "2class", "--labels", "5", "--config", str(Path(__file__).with_name("fast_cli.toml")),
                                      "--data", str(data), "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 0, result.output
    data.rename(tmp_path / "moved")
    assert_one_error_line(["evaluate", "--checkpoint", tmp_path / "run" / "best.pt"], "demo", "not there", "--data")
    moved = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "moved")])
    assert moved.exit_code == 0, moved.output


@pytest.mark.parametrize("content, fragment", [(b"", "empty file (0 bytes)"), (b"not an image at all", "no PNG or JPEG signature")])
def test_predict_names_what_is_wrong_with_an_image_file(content, fragment, trained_run, tmp_path):
    scan = tmp_path / "scan.png"
    scan.write_bytes(content)
    line = assert_one_error_line(["predict", "--checkpoint", trained_run / "best.pt", scan], "scan.png", fragment)
    assert "BytesIO" not in line


@pytest.mark.parametrize("column, value, fragment", [("split", "trian", "split 'trian'; expected one of train, val, test"),
                                                     ("class_name", "nromal", "class 'nromal'; expected one of meta.json's class_names")])  # fmt: skip
def test_an_index_row_outside_the_splits_or_classes_is_named(column, value, fragment, tmp_path):
    data = prepared_demo(tmp_path)
    lines = (data / "index.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index(column)] = value
    lines[3] = ",".join(cells)
    (data / "index.csv").write_text("\n".join(lines) + "\n")
    assert_one_error_line(["train", "--data", data, "--epochs", "1"], "index.csv", "line 4", fragment)
