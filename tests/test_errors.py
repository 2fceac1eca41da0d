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
