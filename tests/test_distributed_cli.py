"""`pyro-adgm train` under torchrun on the CPU: two processes joined by gloo on the demo phantoms.

Each test launches ``python -m torch.distributed.run --nproc-per-node 2 --master-port PORT .venv/bin/pyro-adgm
train ...`` (the same as ``torchrun --nproc-per-node 2 $(which pyro-adgm) train ...``) with a tiny config (the
command-line tests' 120 phantoms at 28x28, small networks), and checks what a user would: one run directory
written by rank 0, its checkpoint used by one process, a one-process run resumed by two, and a rank that dies.
"""

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import SMALL_MODEL
from test_distributed import free_port

from cli.main import app
from pyro_adgm.checkpoint import load_checkpoint
from pyro_adgm.runs import load_model

SCRIPT = Path(sys.executable).with_name("pyro-adgm")
FAST_CONFIG = Path(__file__).with_name("fast_cli.toml")
pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="the pyro-adgm script is not installed beside this Python")


@pytest.fixture
def settings(tmp_path):
    """The command-line tests' settings with the small networks and small evaluation batches, as a TOML file."""
    architecture = ", ".join(f"{k} = {list(v) if isinstance(v, tuple) else v}" for k, v in SMALL_MODEL.items())
    path = tmp_path / "tiny.toml"
    path.write_text(FAST_CONFIG.read_text() + f"architecture = {{ {architecture} }}\ndiagnostics_size = 32\n")
    return path


def torchrun(*args, cwd: Path, log_dir: Path | None = None, **popen) -> subprocess.Popen:
    """``torchrun --nproc-per-node 2 pyro-adgm ARGS`` on a free port; with ``log_dir`` each rank's output goes to its
    own files there (``--redirects 3``) instead of torchrun's."""
    logs = ["--log-dir", str(log_dir), "--redirects", "3"] if log_dir is not None else []
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
               *logs, str(SCRIPT), *map(str, args)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finished(process: subprocess.Popen, timeout: float = 50.0) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not end within {timeout:g} s:\n{output}")
    return process.returncode, output


def epochs_in(run_dir: Path) -> list[int]:
    if not (run_dir / "metrics.csv").is_file():
        return []
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_a_two_process_run_writes_one_run_directory_that_one_process_evaluates_and_resumes(tmp_path, settings):
    run_dir = tmp_path / "run"
    code, output = finished(torchrun("train", "--config", settings, "--task", "2class", "--labels", "5", "--out", run_dir, cwd=tmp_path))
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.toml"]  # nothing but rank 0's run directory
    for name in ("config.json", "metrics.csv", "last.pt", "best.pt", "report.json", "confusion.png", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert epochs_in(run_dir) == [1]
    assert output.count("val accuracy:") == 1 and output.count(f"run directory: {run_dir}") == 1  # printed by rank 0 alone
    # an epoch is one pass over the unlabelled images in steps of 2 x 16: half the steps of one process
    match = re.search(r"training adgm on 10 labelled \+ (\d+) unlabelled images \((\d+) steps/epoch, .*rank 0 of 2\)", output)
    assert match and int(match.group(2)) == math.ceil(int(match.group(1)) / 32), output
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    model, _ = load_model(run_dir / "last.pt", "cpu")  # loads and classifies in this process
    assert model.classify(torch.rand(3, 1, 28, 28)).shape == (3, 2)
    result = invoke("evaluate", "--checkpoint", run_dir / "last.pt", "--out", tmp_path / "eval")
    assert result.exit_code == 0 and "val accuracy" in result.output, result.output
    result = invoke("train", "--resume", run_dir, "--epochs", 2)  # one process goes on from the two's checkpoint
    assert result.exit_code == 0, result.output
    assert epochs_in(run_dir) == [1, 2] and load_checkpoint(run_dir / "last.pt")["epoch"] == 2


@pytest.mark.slow
def test_a_one_process_run_resumes_with_two_processes(tmp_path, settings):
    run_dir = tmp_path / "run"
    result = invoke("train", "--config", settings, "--task", "2class", "--labels", "5", "--out", run_dir)
    assert result.exit_code == 0, result.output
    one = load_checkpoint(run_dir / "last.pt")
    code, output = finished(torchrun("train", "--resume", run_dir, "--epochs", 2, cwd=tmp_path))
    assert code == 0, output
    assert "resuming" in output and output.count("val accuracy:") == 1
    assert epochs_in(run_dir) == [1, 2]
    two = load_checkpoint(run_dir / "last.pt")
    assert two["epoch"] == 2 and two["train_config"]["epochs"] == 2
    steps = {int(s["state"][0]["step"]) for s in two["objective_state"]["optimizer"].values() if s["state"]}
    steps_one = {int(s["state"][0]["step"]) for s in one["objective_state"]["optimizer"].values() if s["state"]}
    (before,) = steps_one
    (after,) = steps
    assert after - before == math.ceil(before / 2)  # the second epoch took half the steps, with batches of 2 x 16


def rank_process(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank``: a child of the torchrun process ``parent`` (Linux: /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            ppid = int(proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and f"RANK={rank}".encode() in proc.joinpath("environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, ValueError, IndexError):  # not a process, or one that ended meanwhile
            continue
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the rank's process through /proc")
def test_a_rank_that_dies_ends_the_run_with_one_line_and_leaves_last_pt_loadable(tmp_path, settings):
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    process = torchrun("train", "--config", settings, "--task", "2class", "--labels", "5", "--epochs", 50, "--out", run_dir,
                       cwd=tmp_path, log_dir=logs)  # fmt: skip
    deadline = time.monotonic() + 40
    while not epochs_in(run_dir) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    victim = rank_process(process.pid, 1) if process.poll() is None else None
    assert victim is not None and epochs_in(run_dir), process.communicate(timeout=30)[0] if process.poll() is not None else "no epoch"
    os.kill(victim, signal.SIGKILL)  # rank 1 dies without a word, after epoch 1
    killed = time.monotonic()
    code, output = finished(process, timeout=40)
    assert code != 0 and time.monotonic() - killed < 35, output
    (stderr,) = logs.glob("**/0/stderr.log")  # rank 0's own output
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    assert "Traceback" not in stderr.read_text(), stderr.read_text()
    # rank 0 ends with one line: the collective that failed, or torchrun's SIGTERM after rank 1's death
    assert re.fullmatch(rf"Error: rank 0 of 2: .*; the last good checkpoint is {re.escape(str(run_dir / 'last.pt'))}", lines[-1]), lines[-1]
    state = load_checkpoint(run_dir / "last.pt")  # whole: written atomically, before or after rank 1 died
    assert state["epoch"] >= 1
    model, _ = load_model(run_dir / "last.pt", "cpu")
    assert model.classify(torch.rand(2, 1, 28, 28)).shape == (2, 2)
