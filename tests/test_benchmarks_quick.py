"""The benchmark scripts in --quick mode, so they don't rot; the Pyro-overhead one also checks its objective."""

import importlib.util
from pathlib import Path

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
