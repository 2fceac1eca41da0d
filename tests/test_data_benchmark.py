"""The data-preparation benchmark runs end to end in its quick mode."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_prepare_throughput_quick(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "benchmarks/prepare_throughput.py", "--quick", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(out.read_text())
    assert summary["data"].startswith("32 copies of")
    assert set(summary["methods"]) == {"original (pydicom + skimage, 1 process)", "prepare rsna, 1 worker",
                                       "prepare rsna, 2 workers"}
    for row in summary["methods"].values():
        assert row["median_images_per_s"] > 0 and row["median_peak_mib"] > 0
    assert set(summary["peak_memory_by_dataset_size"]) == {"8", "32"}
    assert "| method |" in run.stdout
