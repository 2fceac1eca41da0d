"""The resumable writer: kill -9 and rerun, interrupted runs, changed arguments, locking, atomic publication."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from data_helpers import load_report, make_rsna_root, read_dataset

from data_tools.errors import InputError
from data_tools.rsna import prepare_rsna
from data_tools.writer import CHUNK_DELAY_ENV, ImageTask, prepare_images

REPO = Path(__file__).resolve().parents[1]


def _log_lines(out: Path) -> int:
    log = out.with_name(out.name + ".partial") / "log.jsonl"
    return log.read_bytes().count(b"\n") if log.exists() else 0


def _start_cli(root: Path, out: Path, delay: float) -> subprocess.Popen:
    command = [sys.executable, "-c", "from cli.main import app; app()", "prepare", "rsna", "--root", str(root),
               "--out", str(out), "--size", "24", "--workers", "1", "--no-progress"]
    env = {**os.environ, CHUNK_DELAY_ENV: str(delay)}
    # Its own process group (setsid), so that the test can check that no worker outlives the killed parent.
    return subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_when_logged(process: subprocess.Popen, out: Path, lines: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while _log_lines(out) < lines:
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "the run did not get far enough"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)  # the parent only, as `kill -9 PID` would
    process.wait()
    process.stdout.close()
    # Workers die with their parent (PR_SET_PDEATHSIG); wait for the whole process group to be gone.
    deadline = time.monotonic() + 10
    while _alive_in_group(process.pid):
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("a worker process outlived its killed parent")
        time.sleep(0.05)
    return _log_lines(out)


def _alive_in_group(group: int) -> list[int]:
    """Processes of a process group that are still running (zombies awaiting their reaper do not count)."""
    alive = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group and state != "Z":
            alive.append(int(entry.name))
    return alive


@pytest.mark.slow
def test_kill_9_and_rerun_finishes_without_redoing_images(tmp_path):
    root = tmp_path / "rsna"
    make_rsna_root(root, 320, size=40)
    out = tmp_path / "out"

    first = _kill_when_logged(_start_cli(root, out, delay=0.1), out, lines=64)
    print("logged before the first kill:", first)
    assert 64 <= first < 320
    assert not out.exists()  # nothing published, so no reader can see a partial dataset
    # A kill in the middle of a log write leaves a cut line; the rerun must drop it.
    with open(out.with_name("out.partial") / "log.jsonl", "ab") as log:
        log.write(b'{"row": 31')
    second = _kill_when_logged(_start_cli(root, out, delay=0.1), out, lines=first + 64)
    assert second > first and not out.exists()
    print("logged before the second kill:", second)

    finished = subprocess.run(
        [sys.executable, "-c", "from cli.main import app; app()", "prepare", "rsna", "--root", str(root), "--out",
         str(out), "--size", "24", "--workers", "2", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = load_report(out)
    assert report["images_decoded_this_run"] == 320 - second
    assert report["images_done_in_earlier_runs"] == second
    assert not out.with_name("out.partial").exists()

    prepare_rsna(tmp_path / "reference", root=root, size=24, workers=0)
    resumed, reference = read_dataset(out), read_dataset(tmp_path / "reference")
    np.testing.assert_array_equal(resumed.images, reference.images)
    assert resumed.index.rows() == reference.index.rows()


class _Interrupt(BaseException):
    """Stands for Ctrl-C or a crash in the middle of a run."""


def _tasks(n: int) -> list[ImageTask]:
    return [ImageTask(f"img-{i:03d}", f"mem:{i}", f"patient-{i // 2:03d}", "ab"[i % 2]) for i in range(n)]


def _image(path: str, size: int = 8) -> np.ndarray:
    i = int(path.split(":")[1])
    return np.full((size, size), i % 256, dtype=np.uint8)


def _prepare(tasks, out, loader, **kwargs):
    defaults = dict(image_size=8, preprocessing={"kind": "test"}, meta={"source": "test", "class_names": ["a", "b"],
                    "tasks": {"2class": {"a": ["a"], "b": ["b"]}}}, workers=0, chunk_size=10)
    return prepare_images(tasks, out, loader=loader, **{**defaults, **kwargs})


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    tasks, out, calls = _tasks(100), tmp_path / "out", []

    def interrupted(path):
        if len(calls) == 47:
            raise _Interrupt
        calls.append(path)
        return _image(path), {}

    with pytest.raises(_Interrupt):
        _prepare(tasks, out, interrupted)
    assert _log_lines(out) == 40  # four whole chunks of ten were logged; the chunk in progress was lost
    calls.clear()

    def counting(path):
        calls.append(path)
        return _image(path), {}

    result = _prepare(tasks, out, counting)
    assert len(calls) == 60 and result.decoded_this_run == 60 and result.n_images == 100
    assert calls[0] == "mem:40"
    images = read_dataset(out).images
    np.testing.assert_array_equal(images[:, 0, 0], np.arange(100) % 256)


def test_changed_arguments_start_the_staging_over(tmp_path):
    tasks, out = _tasks(30), tmp_path / "out"

    def stop_after(n):
        calls = []

        def loader(path):
            if len(calls) == n:
                raise _Interrupt
            calls.append(path)
            return _image(path, 8), {}

        return loader

    with pytest.raises(_Interrupt):
        _prepare(tasks, out, stop_after(15))
    assert _log_lines(out) == 10
    # Another size: the staged rows are useless and the run starts over.
    result = _prepare(tasks, out, lambda p: (_image(p, 12), {}), image_size=12)
    assert result.decoded_this_run == 30 and read_dataset(out).image_size == 12
    # The split seed and the failure limit only matter at the end: an interrupted run keeps its rows.
    with pytest.raises(_Interrupt):
        _prepare(tasks, tmp_path / "other", stop_after(15))
    resumed = _prepare(tasks, tmp_path / "other", lambda p: (_image(p, 8), {}), seed=5, max_failure_fraction=0.5)
    assert resumed.decoded_this_run == 20


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    out = tmp_path / "out"
    staging = tmp_path / "out.partial"
    staging.mkdir()
    with open(staging / "lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another `pyro-adgm prepare` is writing"):
            _prepare(_tasks(5), out, lambda p: (_image(p), {}))


def test_readers_see_the_old_dataset_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    _prepare(_tasks(10), out, lambda p: (_image(p), {}))
    seen = []

    def loader(path):
        seen.append(len(read_dataset(out).index))  # the old, complete dataset, all along
        return _image(path), {}

    _prepare(_tasks(20), out, loader)
    assert set(seen) == {10} and len(read_dataset(out).index) == 20
    assert not list(tmp_path.glob(".out.*"))  # no temporaries or old copies left behind


def test_failures_are_left_out_and_identical_files_listed(tmp_path):
    from data_tools.dicom import ImageReadError

    def loader(path):
        i = int(path.split(":")[1])
        if i in (3, 4):
            raise ImageReadError("unreadable", f"{path}: broken")
        if i == 7:
            raise RuntimeError("decoder crashed")
        return _image(path), {"sha": "same" if i in (1, 9) else path}

    result = _prepare(_tasks(40), tmp_path / "out", loader, max_failure_fraction=0.1)
    assert result.n_images == 37 and result.n_failed == 3
    report = load_report(tmp_path / "out")
    assert [f["id"] for f in report["failures"]] == ["img-003", "img-004", "img-007"]
    assert "RuntimeError: decoder crashed" in report["failures"][2]["message"]
    assert report["identical_files"] == [["img-001", "img-009"]]
    dataset = read_dataset(tmp_path / "out")
    expected = [i % 256 for i in range(40) if i not in (3, 4, 7)]
    np.testing.assert_array_equal(dataset.images[:, 0, 0], expected)
    assert list(dataset.index.id) == [f"img-{i:03d}" for i in range(40) if i not in (3, 4, 7)]


def test_option_values_are_checked_before_any_work(tmp_path):
    for kwargs, message in [
        ({"val_fraction": 1.2}, "fractions"),
        ({"max_failure_fraction": 2.0}, "max-failure-fraction"),
        ({"workers": -1}, "--workers"),
        ({"image_size": 0}, "--size"),
    ]:
        with pytest.raises(InputError, match=message):
            _prepare(_tasks(5), tmp_path / "out", lambda p: (_image(p), {}), **kwargs)
    assert not (tmp_path / "out.partial").exists()


def test_staging_plan_is_json(tmp_path):
    with pytest.raises(_Interrupt):
        _prepare(_tasks(30), tmp_path / "out", lambda p: (_ for _ in ()).throw(_Interrupt))
    plan = json.loads((tmp_path / "out.partial" / "plan.json").read_text())
    assert plan["n"] == 30 and plan["size"] == 8 and len(plan["fingerprint"]) == 64


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"image_size": 0}, r"image size \(--size\) 0: expected a positive number of pixels"),
        ({"workers": -1}, r"workers \(--workers\) -1: expected 0"),
        ({"max_failure_fraction": 2.0}, r"max_failure_fraction \(--max-failure-fraction\) 2.0: expected a number in \[0, 1\]"),
    ],
)
def test_bad_settings_name_the_argument_and_the_cli_option(tmp_path, option, message):
    with pytest.raises(InputError, match=message):
        _prepare(_tasks(4), tmp_path / "out", lambda path: (_image(path), {}), **option)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_rsna_without_root_or_paths_says_which_are_needed(tmp_path):
    with pytest.raises(InputError, match=r"give root \(--root\), or all of images_dir, labels_csv and class_csv"):
        prepare_rsna(out=tmp_path / "out", size=8)


def test_a_dataset_without_a_val_split_or_a_second_class_is_warned_about():
    from data_tools.writer import thin_dataset_warnings

    fine = {"train": {"a": 8, "b": 8}, "val": {"a": 1, "b": 1}, "all": {"a": 9, "b": 9}}
    assert thin_dataset_warnings(fine, ["a", "b"]) == []
    no_val = {"train": {"a": 8, "b": 8}, "all": {"a": 8, "b": 8}}
    assert thin_dataset_warnings(no_val, ["a", "b"]) == ["no images in the val split, which training needs (a larger --val-fraction, or more images)"]
    one_class = {"train": {"a": 8}, "val": {"a": 2}, "all": {"a": 10}}
    assert thin_dataset_warnings(one_class, ["a", "b"]) == ["images of 1 class only (a); training needs two or more"]
