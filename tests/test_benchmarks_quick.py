"""The benchmark scripts in --quick mode, so they don't rot; the Pyro-overhead one also checks its objective."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from data_helpers import read_dataset
from sklearn.metrics import roc_auc_score

from data_tools.errors import InputError
from pyro_adgm.label_curve import read_rows

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pyro_overhead_quick_compares_the_same_objective(tmp_path):
    results = load("pyro_overhead").main(["--quick", "--json", str(tmp_path / "out.json")])
    assert (tmp_path / "out.json").is_file()
    for row in results:
        assert row["objective_mismatch"] < 1e-5
        assert row["pyro_step_s"] > 0 and row["torch_step_s"] > 0


def test_label_sweep_quick_writes_table_and_figures(tmp_path):
    rows = load("label_sweep").main(["--quick", "--out", str(tmp_path)])
    assert {r["method"] for r in rows} == {"adgm", "supervised"}
    for name in ("label_curve.csv", "summary.md", "accuracy_vs_labels.png", "val_curves.png"):
        assert (tmp_path / name).is_file(), name
    assert "| adgm | 3 | 1 |" in (tmp_path / "summary.md").read_text()
    for row in rows:  # how much of its best validation accuracy each run held: that of its last epoch
        with open(Path(row["run_dir"]) / "metrics.csv", newline="") as handle:
            assert row["final_val_accuracy"] == float(list(csv.DictReader(handle))[-1]["val_accuracy"])
    # the ADGM runs there have a Gaussian p(x|z,y): not reported as runs of another likelihood
    with pytest.raises(InputError, match="holds a run with model likelihood = gaussian, not the discretized-logistic asked for"):
        load("label_sweep").main(["--quick", "--methods", "adgm", "--likelihood", "discretized-logistic", "--out", str(tmp_path)])
    # nor the uniform-p(y) runs as runs with a known or a learned p(y)
    with pytest.raises(InputError, match=r"holds a run with model class_prior = uniform, not the \[0.3, 0.7\] asked for"):
        load("label_sweep").main(["--quick", "--methods", "adgm", "--class-prior", "normal=0.3,abnormal=0.7", "--out", str(tmp_path)])
    with pytest.raises(InputError, match="holds a run with model learn_class_prior = False, not the True asked for"):
        load("label_sweep").main(["--quick", "--methods", "adgm", "--class-prior", "learned", "--out", str(tmp_path)])
    # nor the full-unlabelled-term runs as runs with a smaller final weight; the baseline, which has none, is reused
    with pytest.raises(InputError, match="holds a run trained with unlabelled_weight = batch-means, not the 0.1 asked for"):
        load("label_sweep").main(["--quick", "--unlabelled-weight", "0.1", "--out", str(tmp_path)])
    baseline = Path(next(r["run_dir"] for r in rows if r["method"] == "supervised")) / "report.json"
    written = baseline.stat().st_mtime_ns
    reused = load("label_sweep").main(["--quick", "--methods", "supervised", "--unlabelled-weight", "0.1", "--out", str(tmp_path)])
    assert [r["val_accuracy"] for r in reused] == [r["val_accuracy"] for r in rows if r["method"] == "supervised"]
    assert baseline.stat().st_mtime_ns == written  # not trained again
    for weight in ("0", "inf"):
        with pytest.raises(SystemExit):
            load("label_sweep").main(["--quick", "--unlabelled-weight", weight, "--out", str(tmp_path / "other")])
    for setting in (["--likelihood", "discretized-logistic"], ["--likelihood", "bernoulli-grey"]):  # none for the baseline; retired
        with pytest.raises(SystemExit):
            load("label_sweep").main(["--quick", *setting, "--out", str(tmp_path / "other")])



def test_label_sweep_goes_on_from_a_results_file_on_a_machine_without_the_run_folders(tmp_path):
    kept = tmp_path / "results" / "label_curve.csv"
    first = load("label_sweep").main(["--quick", "--out", str(tmp_path / "machine1"), "--rows", str(kept)])
    assert [(r["method"], r["labels_per_class"], r["seed"]) for r in read_rows(kept)] == [("adgm", 3, 0), ("supervised", 3, 0)]
    again = load("label_sweep").main(["--quick", "--out", str(tmp_path / "machine2"), "--rows", str(kept)])
    assert [r["test_accuracy"] for r in again] == pytest.approx([r["test_accuracy"] for r in first])
    assert not any(p.name.endswith("seed0") for p in (tmp_path / "machine2").iterdir())  # nothing trained again

def test_gpu_throughput_quick_times_steps_and_epochs(tmp_path):
    results = load("gpu_throughput").main(["--quick", "--threads", "1", "--json", str(tmp_path / "out.json")])
    assert (tmp_path / "out.json").is_file()
    assert {r["task"] for r in results["epochs"]} == {"2class", "3class"}
    for row in results["epochs"]:
        assert row["status"] == "ok" and row["train_epoch_s"] > 0 and row["eval_s"] > 0
        assert row["steps_per_epoch"] == 4 and row["paper_run_hours"] > 0
    assert {(r["batch_size"], r["variant"]) for r in results["throughput"]} == {(b, v) for b in (4, 8) for v in ("default", "fast")}
    for row in results["throughput"]:
        assert row["status"] == "ok" and row["step_s"] > 0 and row["images_per_s"] > 0
        assert row["images_per_step"] == 2 * row["batch_size"]
        assert (row["peak_gib"] is None) == (results["environment"]["gpu"] is None)
    assert "| 2class | 4 |" in results["markdown"] and results["command"] in results["markdown"]


def test_stability_quick_runs_and_summarises_each_setting(tmp_path):
    rows = load("stability").main(["--quick", "--out", str(tmp_path)])
    assert sorted(r["run"] for r in rows) == ["l3-bound-avg", "l3-bound-raw"]
    assert json.loads((tmp_path / "l3-bound-raw" / "config.json").read_text())["train"]["weight_average_decay"] is None  # its file's
    for row in rows:
        curve = row["curve"]
        assert row["epochs"] == len(curve) == 2 and row["final"] == curve[-1] and row["best"] == max(curve)
        assert row["mean_abs_change"] == pytest.approx(abs(curve[1] - curve[0]))
        assert f"| {row['run']} | 2 |" in (tmp_path / "stability.md").read_text()
    for name in ("stability.csv", "stability.md", "stability.png"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "MNIST" / "raw").is_dir(),
                    reason="../shared/data/MNIST is absent")  # fmt: skip
def test_denormal_flush_quick_times_both_settings():
    result = load("denormal_flush").main(["--quick"])
    assert result["step_s_no_flush"] > 0 and result["step_s_flush"] > 0
    assert result["ratio_no_flush_over_flush"] == result["step_s_no_flush"] / result["step_s_flush"]


def test_augment_mismatch_quick_reports_every_transform():
    module = load("augment_mismatch")
    (result,) = module.main(["--quick"])
    names = [row["transform"] for row in result["rows"]]
    assert names[0] == "as stored" and names[-1] == "mean of 2 random transforms" and len(names) == 6
    for row in result["rows"]:
        assert sum(row["mean_probability"]) == pytest.approx(1.0, abs=1e-5)
        assert row["best_threshold_accuracy"] >= row["accuracy"] - 1e-9
    assert sum(result["class_share"]) == pytest.approx(1.0)


def test_augment_mismatch_shift_moves_every_pixel_by_one():
    import torch

    module = load("augment_mismatch")
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    shifted = module.shift_one_pixel(x)
    assert torch.equal(shifted[0, 0, 1:, 1:], x[0, 0, :3, :3]) and shifted[0, 0, 0].abs().sum() == 0


def test_class_shift_quick_reports_each_split():
    rows = load("class_shift").main(["--quick", "--splits", "train", "val", "--means"])
    assert [r["split"] for r in rows] == ["train", "val"]
    for r in rows:
        assert sum(r["class_share"]) == pytest.approx(1.0) and sum(r["model_prior"]) == pytest.approx(1.0, abs=1e-5)
        assert r["model_prior"] != [0.5, 0.5]  # the command line's default: a learned p(y)
        assert r["best_threshold_accuracy"] >= r["accuracy"] - 1e-9
        assert sum(map(sum, r["confusion_matrix"])) == r["n"]


def test_class_shift_reads_the_splits_of_another_dataset(tmp_path):
    from data_tools.demo import make_demo_dataset

    other = make_demo_dataset(60, 28, seed=5, val_fraction=0.2, test_fraction=0.5).save(tmp_path / "other")
    rows = load("class_shift").main(["--quick", "--splits", "test", "--data", str(other)])
    assert [(r["split"], r["data"], r["n"]) for r in rows] == [("test", str(other), int((read_dataset(other).index.split == "test").sum()))]


def test_label_sweep_refuses_a_prepared_folder_of_another_test_split(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    npz = tmp_path / "pneumoniamnist.npz"
    np.savez(npz, **{f"{split}_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for split, n in (("train", 12), ("val", 4), ("test", 6))},
             **{f"{split}_labels": np.arange(n) % 2 for split, n in (("train", 12), ("val", 4), ("test", 6))})  # fmt: skip
    sweep = load("label_sweep")
    prepared = sweep.prepared_dataset(npz, tmp_path / "iid", test_from_train=5)
    assert sweep.prepared_dataset(npz, tmp_path / "iid", test_from_train=5) == prepared  # prepared once, then reused
    with pytest.raises(InputError, match="prepared with 5 images drawn from train as the test split, not the file's"):
        sweep.prepared_dataset(npz, tmp_path / "iid")
    sweep.prepared_dataset(npz, tmp_path / "kept")
    with pytest.raises(SystemExit):  # a usage error before any run
        sweep.main(["--npz", str(npz), "--test-from-train", "5", "--out", str(tmp_path / "kept")])
    assert "not 5 images drawn from train" in capsys.readouterr().err
    assert not any((tmp_path / "kept").glob("adgm-*"))
    with pytest.raises(SystemExit):  # the demo phantoms of --quick have no file to draw from
        sweep.main(["--quick", "--test-from-train", "5", "--out", str(tmp_path / "quick")])


def test_split_shift_quick_tests_the_same_checkpoints_on_another_split(tmp_path):
    rows = load("split_shift").main(["--quick", "--out", str(tmp_path)])
    assert {r["method"] for r in rows} == {"adgm", "supervised"}
    for row in rows:
        saved = Path(row["run_dir"]) / "shifted-test" / "other" / "evaluation-test.json"
        assert saved.is_file()  # evaluated on the other dataset's test split, next to the run
        assert row["shifted_test_accuracy"] == pytest.approx(json.loads(saved.read_text())["accuracy"])
        assert 0 <= row["test_accuracy"] <= 1
    for name in ("split_shift.csv", "split_shift.md", "split_shift.png"):
        assert (tmp_path / name).is_file(), name
    assert "| sweep | adgm | 3 | 1 |" in (tmp_path / "split_shift.md").read_text()
    written = saved.stat().st_mtime_ns
    again = load("split_shift").main([str(tmp_path / "sweep"), "--data", str(tmp_path / "other"), "--out", str(tmp_path / "again")])
    assert again == rows and saved.stat().st_mtime_ns == written  # read back, not evaluated again
    with pytest.raises(SystemExit):  # not a sweep folder: a usage error
        load("split_shift").main([str(tmp_path / "nothing"), "--data", str(tmp_path)])


def test_split_shift_compares_the_methods_on_the_seeds_both_have():
    def row(sweep, method, seed, drawn, shifted):
        return {"sweep": sweep, "method": method, "labels_per_class": 10, "seed": seed, "test_accuracy": drawn,
                "shifted_test_accuracy": shifted}  # fmt: skip

    baseline = [row("a", "supervised", seed, 0.80 + 0.1 * (seed >= 3), 0.70) for seed in range(5)]
    rows = baseline + [row("a", "adgm", seed, 0.85, 0.68) for seed in range(5)] + [row("b", "adgm", seed, 0.82, 0.71) for seed in range(3)]
    leads = load("split_shift").paired_leads(rows)
    assert leads[("a", 10)]["seeds"] == [0, 1, 2, 3, 4]
    assert leads[("a", 10)]["test_accuracy"] == pytest.approx(0.85 - 0.84)
    # sweep b has no baseline of its own and only seeds 0-2: compared with sweep a's baseline on those seeds
    assert leads[("b", 10)]["seeds"] == [0, 1, 2]
    assert leads[("b", 10)]["test_accuracy"] == pytest.approx(0.02)
    assert leads[("b", 10)]["shifted_test_accuracy"] == pytest.approx(0.01)


def test_ablation_quick_runs_every_setting_with_its_options(tmp_path):
    module = load("ablation")
    rows = module.main(["--quick", "--out", str(tmp_path)])
    assert {r["setting"] for r in rows} == {"supervised", *module.SETTINGS}
    for row in rows:
        saved = json.loads((Path(row["run_dir"]) / "config.json").read_text())
        if row["setting"] == "supervised":
            continue
        model_options, train_options = module.SETTINGS[row["setting"]]
        for key, value in model_options.items():
            assert saved["model"][key] == value, (row["setting"], key)
        assert saved["train"]["decoupled_weight_decay"] == train_options["decoupled_weight_decay"]
        assert 0.0 <= row["train_accuracy_fall"] <= 1.0
    table = (tmp_path / "ablation.md").read_text()
    assert "| all | 3 | 1 |" in table and "| before | 3 | 1 |" in table
    # rerun: every run is read back, none trained again
    mtimes = {r["run_dir"]: (Path(r["run_dir"]) / "last.pt").stat().st_mtime for r in rows}
    module.main(["--quick", "--out", str(tmp_path), "--settings", "all"])
    assert all((Path(d) / "last.pt").stat().st_mtime == t for d, t in mtimes.items())
    # the tables of the finished runs alone
    assert (tmp_path / "ablation.csv").read_text().count("\n") == 1 + len(rows)
    module.main(["--summarise-only", "--out", str(tmp_path)])
    assert (tmp_path / "ablation.md").read_text().count("| all |") == 1


def test_generation_accuracy_quick_classifies_every_generated_image():
    result = load("generation_accuracy").main(["--quick"])
    assert result["per_class"] == 8 and set(result["per_class_accuracy"]) == {0, 1}
    per_class = list(result["per_class_accuracy"].values())
    assert result["accuracy"] == pytest.approx(sum(per_class) / 2)
    assert all(0.0 <= v <= 1.0 for v in per_class) and 0.0 < result["mean_requested_probability"] < 1.0
    assert set(result["detail_control"]) == {28, 14}  # the full 28 pixels, then the detail of 14 removed
    assert all(set(accuracy) == {0, 1} for accuracy in result["detail_control"].values())


def test_label_weight_quick_weighs_the_batches_alike(tmp_path):
    """batch-means runs with the default unlabelled weight, beta-10 with beta 10 and the weight 1; the trainer
    resolves batch-means to N_l / N_u (tests/test_training.py)."""
    rows = {r["setting"]: r for r in load("label_weight").main(["--quick", "--out", str(tmp_path)])}
    assert set(rows) == {"batch-means", "beta-10"}
    with open(tmp_path / "label_weight.csv", newline="") as handle:
        written = {r["setting"]: r for r in csv.DictReader(handle)}
    assert written["batch-means"]["unlabelled_weight"] == "batch-means"
    assert float(written["batch-means"]["beta"]) == 1.0
    assert (float(written["beta-10"]["unlabelled_weight"]), float(written["beta-10"]["beta"])) == (1.0, 10.0)
    saved = json.loads((Path(rows["batch-means"]["run_dir"]) / "config.json").read_text())["train"]
    assert saved["unlabelled_weight"] == "batch-means"
    with open(Path(rows["batch-means"]["run_dir"]) / "metrics.csv", newline="") as handle:
        # 3 labels per class of 2 classes, the other 114 of the demo's 120 training images unlabelled; one epoch
        # of the 8-epoch ramp
        assert float(next(csv.DictReader(handle))["unlabelled_weight"]) == pytest.approx(6 / 114 / 8, rel=1e-4)
    # on a machine without those run folders the results file is enough: nothing is trained again
    again = load("label_weight").main(["--quick", "--out", str(tmp_path / "elsewhere"), "--rows", str(tmp_path / "label_weight.csv")])
    assert {r["setting"]: r["test_accuracy"] for r in again} == pytest.approx({k: r["test_accuracy"] for k, r in rows.items()})
    assert not (tmp_path / "elsewhere" / "quick").exists()


def test_label_weight_summary_pairs_each_setting_with_the_baseline_of_its_seed(tmp_path):
    """The J^alpha rows come from ablation.csv's defaults (PneumoniaMNIST) and rsna_1500.csv's adgm rows, a sum run
    of the script replaces the row of its seed, and each gain is against the supervised run of the same seed."""
    module = load("label_weight")
    ablation = "setting,method,labels_per_class,seed,val_accuracy,final_val_accuracy,test_accuracy,test_roc_auc\n" \
        "supervised,supervised,10,0,0.80,0.7,0.81,0.9\nsupervised,supervised,10,1,0.70,0.7,0.71,0.9\n" \
        "defaults,adgm,10,0,0.85,0.8,0.86,0.9\n+adamw,adgm,10,0,0.99,0.9,0.99,0.9\n"  # fmt: skip
    rsna = "task,method,labels_per_class,seed,val_accuracy,final_val_accuracy,test_accuracy,test_roc_auc\n" \
        "2class,supervised,25,0,0.70,0.6,0.72,0.7\n2class,adgm,25,0,0.50,0.5,0.50,0.6\n"  # fmt: skip
    ours = "data,setting,method,labels_per_class,seed,val_accuracy,final_val_accuracy,test_accuracy,test_roc_auc\n" \
        "pneumoniamnist,batch-means,adgm,10,0,0.81,0.8,0.83,0.9\npneumoniamnist,batch-means,adgm,10,1,0.73,0.7,0.74,0.9\n" \
        "rsna-2class,sum,adgm,25,0,0.60,0.6,0.62,0.6\n"  # fmt: skip
    (tmp_path / "ablation.csv").write_text(ablation)
    (tmp_path / "rsna_1500.csv").write_text(rsna)
    (tmp_path / "label_weight.csv").write_text(ours)
    table = module.summary_markdown(module.comparison_rows(tmp_path / "label_weight.csv", tmp_path)).splitlines()
    assert "| pneumoniamnist | 10 | sum | 1 | 0.850 | 0.800 | +5.0 | 0.860 | +5.0 | 0.900 |" in table
    assert "| pneumoniamnist | 10 | batch-means | 2 | 0.770 ± 0.057 | 0.750 ± 0.071 | +2.0 ± 1.4 | 0.785 ± 0.064 | +2.5 ± 0.7 | 0.900 ± 0.000 |" in table
    assert "| rsna-2class | 25 | sum | 1 | 0.600 | 0.600 | -10.0 | 0.620 | -10.0 | 0.600 |" in table  # the script's run
    assert not any("+adamw" in line for line in table)
    assert "| sum | 2 | -2.5 | -10.0 | +5.0 |" in table and "| batch-means | 1 | +2.0 | +2.0 | +2.0 |" in table


def test_bound_classifier_margin_auc_is_the_auc_of_the_bound_differences():
    module = load("bound_classifier")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=(200, 2)) * 40 + labels[:, None] * [0.0, 30.0]  # nats: the softmax would saturate
    assert module.margin_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores[:, 1] - scores[:, 0]))
    three = np.eye(3)[np.repeat([0, 1, 2], 5)] * 50.0  # each class's own score highest: a perfect ranking
    assert module.margin_auc(three, np.repeat([0, 1, 2], 5)) == 1.0
    assert module.margin_auc(-three, np.repeat([0, 1, 2], 5)) == 0.0
    assert np.isnan(module.margin_auc(scores, np.zeros(200, dtype=int)))  # one class only: no ranking to judge


def test_bound_classifier_quick_measures_each_checkpoint_once(tmp_path):
    module = load("bound_classifier")
    rows = module.main(["--quick", "--out", str(tmp_path)])
    assert [r["checkpoint"] for r in rows] == ["best", "last"]
    for row in rows:
        assert row["images"] == 15 and 0 <= row["q_accuracy"] <= 1 and 0 <= row["bound_accuracy"] <= 1
        assert row["median_gap_nats"] >= 0
        for auc in (row["q_auc"], row["bound_auc"], row["pixels_auc"], row["aux_auc"], row["latent_auc"]):
            assert np.isnan(auc) or 0 <= auc <= 1
        assert all(np.isfinite(row[f"{t}_gap_nats"]) for t in module.TERMS)
    again = module.main([rows[0]["run_dir"], "--out", str(tmp_path)])  # finished rows are read back, not measured
    assert len(again) == 2 and (tmp_path / "bound_classifier.md").read_text().count("| demo | defaults | 3 | val |") == 2
    both = module.main([rows[0]["run_dir"], "--split", "unlabelled", "--out", str(tmp_path)])
    unlabelled = [r for r in both if r["split"] == "unlabelled"]
    assert [r["checkpoint"] for r in unlabelled] == ["best", "last"] and len(both) == 4
    assert unlabelled[0]["images"] == 150 - 15 - 15 - 2 * 3  # the demo's 150 images less val, test and the 3 labels per class
    assert (tmp_path / "bound_classifier.md").read_text().count("| demo | defaults | 3 | unlabelled |") == 2


def test_latent_size_quick_trains_the_smaller_z_once(tmp_path):
    from pyro_adgm import runs

    rows = load("latent_size").main(["--quick", "--z-dims", "4", "--out", str(tmp_path)])
    assert [(r["setting"], r["labels_per_class"], r["unlabelled_weight"]) for r in rows] == [("z-4", 3, "batch-means")]
    run_dir = tmp_path / "quick" / "z-4" / "adgm-3labels-seed0"
    model, _ = runs.load_model(run_dir / "best.pt", "cpu")
    assert model.z_dim == 4
    stamp = (run_dir / "best.pt").stat().st_mtime_ns
    again = load("latent_size").main(["--quick", "--z-dims", "4", "--out", str(tmp_path)])  # read back, not trained
    assert again == rows and (run_dir / "best.pt").stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit):
        load("latent_size").main(["--quick", "--z-dims", "0", "--out", str(tmp_path)])


def test_latent_size_summary_is_the_table_in_benchmarks_md():
    """--summarise-only on the committed rows gives the z table of BENCHMARKS.md, row for row."""
    module = load("latent_size")
    table = module.summary_markdown(BENCHMARKS / "results", BENCHMARKS / "results" / "label_weight_rerun_e977935.csv")
    rows = [line for line in table.splitlines() if line.startswith("| RSNA-1500")]
    assert len(rows) == 8
    document = (BENCHMARKS.parent / "BENCHMARKS.md").read_text().replace("−", "-")
    for row in rows:
        assert row in document, row


def test_view_position_aucs_tell_the_class_within_each_view():
    module = load("view_position")
    rng = np.random.default_rng(0)
    ap = rng.random(400) < 0.5
    abnormal = rng.random(400) < np.where(ap, 0.7, 0.2)  # AP more often abnormal, as in RSNA
    view_only = ap + rng.normal(0, 0.1, 400)  # a margin that knows the view and nothing else
    aucs = module.view_aucs(view_only, abnormal, ap)
    assert aucs["view"] > 0.99 and aucs["class"] > 0.7  # the view alone ranks the classes
    assert abs(aucs["class_pa"] - 0.5) < 0.12 and abs(aucs["class_ap"] - 0.5) < 0.12  # but not within a view
    assert aucs["class"] == pytest.approx(roc_auc_score(abnormal, view_only))
    assert np.isnan(module.view_aucs(view_only, np.zeros(400, bool), ap)["class"])


def test_view_position_refuses_a_folder_without_views(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load("view_position").main(["--quick", "--source", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "no labels.csv" in capsys.readouterr().err


@pytest.mark.skipif(not (BENCHMARKS.parents[1] / "shared" / "data" / "rsna-1500" / "labels.csv").is_file(),
                    reason="../shared/data/rsna-1500 is absent")
def test_view_position_quick_measures_both_rankings_on_the_unlabelled_images(tmp_path):
    rows = load("view_position").main(["--quick", "--out", str(tmp_path)])
    assert [r["checkpoint"] for r in rows] == ["best", "last"]
    row = rows[0]
    assert row["split"] == "unlabelled" and row["images"] == 1049 - 10  # the training images less the 5 labels per class
    assert row["ap_share_abnormal"] > row["ap_share_normal"]  # RSNA's AP films are more often abnormal
    assert all(0 <= row[f"{who}_{r}_auc"] <= 1 for who in ("q", "bound") for r in ("class", "view", "class_pa", "class_ap"))
    assert "| runs | adgm | 5 | unlabelled | last | 1 |" in (tmp_path / "view_position.md").read_text()


def test_class_offset_quick_measures_the_margin_of_each_unlabelled_image(tmp_path):
    rows = load("class_offset").main(["--quick", "--draws", "4", "--out", str(tmp_path)])
    assert len(rows) == 1
    row = rows[0]
    assert row["images"] > 0 and row["margin_sd"] > 0 and 0.0 <= row["share_1"] <= 1.0 and 0.0 < row["q_share_1"] < 1.0
    assert row["z_sd"] > 0  # means of p(x|z,y) differ between draws of z
    with open(tmp_path / "class_offset.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert float(written[0]["margin_mean"]) == pytest.approx(row["margin_mean"])
