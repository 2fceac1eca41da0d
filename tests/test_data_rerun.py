"""A finished dataset is left alone: a rerun with the same plan is a no-op that says so, --force rebuilds, and
another plan (another size, a changed image) rebuilds with a line naming the difference."""

import os

import numpy as np
import pytest
from click.testing import CliRunner
from data_helpers import make_rsna_root, phantom, read_dataset, write_png

from cli.main import app
from data_tools.errors import InputError
from data_tools.medmnist import prepare_medmnist
from data_tools.rsna import prepare_rsna


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _stamps(out):
    """(name, inode, mtime in ns) of the folder and every file in it."""
    entries = [out, *sorted(out.iterdir())]
    return [(p.name, os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in entries]


def _rsna_args(root, out, size=16):
    return ["prepare", "rsna", "--root", root, "--out", out, "--size", size, "--workers", "0", "--no-progress"]


def test_rsna_rerun_is_a_no_op_and_force_rebuilds(tmp_path):
    root, out = tmp_path / "rsna", tmp_path / "out"
    make_rsna_root(root, 9)
    first = _invoke(*_rsna_args(root, out))
    assert "wrote 9 images" in first and "9 decoded in this run" in first
    before = _stamps(out)

    again = _invoke(*_rsna_args(root, out))
    assert again.strip() == f"{out}: already prepared with the same plan; nothing to do (--force rebuilds)"
    assert _stamps(out) == before
    assert not (tmp_path / "out.partial").exists()

    forced = _invoke(*_rsna_args(root, out), "--force")
    assert "wrote 9 images" in forced and "9 decoded in this run" in forced
    after = {name: (inode, mtime) for name, inode, mtime in _stamps(out)}
    assert all(after[name] != (inode, mtime) for name, inode, mtime in before)


def test_another_size_rebuilds_and_says_why(tmp_path):
    root, out = tmp_path / "rsna", tmp_path / "out"
    make_rsna_root(root, 6)
    _invoke(*_rsna_args(root, out, size=16))
    output = _invoke(*_rsna_args(root, out, size=24))
    assert f"{out}: holds a dataset prepared with another plan (image size 16, now 24); rebuilding it" in output
    assert "6 decoded in this run" in output and read_dataset(out).image_size == 24
    # Back to 16: the 24-pixel dataset is not taken for it either.
    result = prepare_rsna(out, root=root, size=16, workers=0)
    assert not result.unchanged and "image size 24, now 16" in result.note and result.decoded_this_run == 6


@pytest.mark.parametrize(
    "change, difference",
    [
        (lambda root: write_png(root / "stage_2_train_images" / "p00-00002.png", phantom(48, 48, seed=9)), "other inputs"),
        (lambda root: os.utime(root / "stage_2_train_images" / "p00-00003.dcm", ns=(1, 1)), "other inputs"),
        (lambda root: (root / "stage_2_detailed_class_info.csv").write_text(
            (root / "stage_2_detailed_class_info.csv").read_text().replace("Normal", "Lung Opacity", 1)), "other inputs"),
    ],
    ids=["image-added", "image-touched", "label-changed"],
)
def test_changed_inputs_are_not_taken_for_the_same_plan(tmp_path, change, difference):
    root, out = tmp_path / "rsna", tmp_path / "out"
    make_rsna_root(root, 6)
    prepare_rsna(out, root=root, size=16, workers=0, max_failure_fraction=0.5)
    change(root)
    result = prepare_rsna(out, root=root, size=16, workers=0, max_failure_fraction=0.5)
    assert not result.unchanged and difference in result.note and result.decoded_this_run > 0


def test_other_settings_change_the_plan_but_workers_do_not(tmp_path):
    root, out = tmp_path / "rsna", tmp_path / "out"
    make_rsna_root(root, 6)
    prepare_rsna(out, root=root, size=16, workers=0)
    assert prepare_rsna(out, root=root, size=16, workers=2).unchanged
    result = prepare_rsna(out, root=root, size=16, workers=0, seed=3)
    assert not result.unchanged and "splits" in result.note
    result = prepare_rsna(out, root=root, size=16, workers=0, seed=3, square="pad")
    assert not result.unchanged and "square 'crop', now 'pad'" in result.note


def test_a_stricter_failure_limit_still_applies_to_a_finished_dataset(tmp_path):
    root, out = tmp_path / "rsna", tmp_path / "out"
    make_rsna_root(root, 10)
    (root / "stage_2_train_images" / "p00-00004.dcm").write_bytes(b"broken")
    prepare_rsna(out, root=root, size=16, workers=0, max_failure_fraction=0.2)
    assert prepare_rsna(out, root=root, size=16, workers=0, max_failure_fraction=0.2).unchanged
    with pytest.raises(InputError, match=r"1 of 10 images failed \(1 unreadable\).*more than the 5% allowed"):
        prepare_rsna(out, root=root, size=16, workers=0, max_failure_fraction=0.05)


def test_a_damaged_output_is_rebuilt(tmp_path):
    root, out = tmp_path / "rsna", tmp_path / "out"
    make_rsna_root(root, 6)
    prepare_rsna(out, root=root, size=16, workers=0)
    (out / "report.json").unlink()
    result = prepare_rsna(out, root=root, size=16, workers=0)
    assert not result.unchanged and result.decoded_this_run == 6 and (out / "report.json").is_file()


def test_folder_medmnist_and_demo_reruns_are_no_ops(tmp_path):
    folder = tmp_path / "images"
    for i in range(6):
        write_png(folder / ("normal", "pneumonia")[i % 2] / f"img{i}.png", phantom(30, 30, seed=i))
    args = ["prepare", "folder", folder, "--out", tmp_path / "f", "--size", 16, "--workers", 0, "--no-progress"]
    _invoke(*args)
    before = _stamps(tmp_path / "f")
    assert "already prepared with the same plan" in _invoke(*args)
    assert _stamps(tmp_path / "f") == before

    arrays = {f"{s}_images": np.full((4, 28, 28), i, np.uint8) for i, s in enumerate(("train", "val", "test"))}
    arrays.update({f"{s}_labels": np.arange(4).reshape(4, 1) % 2 for s in ("train", "val", "test")})
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    assert not prepare_medmnist(tmp_path / "pneumoniamnist.npz", tmp_path / "m").unchanged
    assert prepare_medmnist(tmp_path / "pneumoniamnist.npz", tmp_path / "m").unchanged
    np.savez(tmp_path / "pneumoniamnist.npz", **{**arrays, "train_images": arrays["train_images"] + 1})
    assert not prepare_medmnist(tmp_path / "pneumoniamnist.npz", tmp_path / "m").unchanged

    demo = ["prepare", "demo", "--out", tmp_path / "d", "--n-images", 30, "--size", 16]
    assert "wrote 30 images" in _invoke(*demo)
    before = _stamps(tmp_path / "d")
    assert _invoke(*demo).strip() == f"{tmp_path / 'd'}: already prepared with the same plan; nothing to do (--force rebuilds)"
    assert _stamps(tmp_path / "d") == before
    assert "wrote 30 images" in _invoke(*demo, "--force")
    assert "wrote 30 images" in _invoke(*demo[:-1], 20)
