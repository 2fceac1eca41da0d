"""benchmarks/host_overhead.py in --quick mode (so it doesn't rot), and gpu_throughput.py's precision variants on a CPU."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def has_revision(revision):
    probe = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{revision}^{{commit}}"], capture_output=True)
    return probe.returncode == 0


def test_host_overhead_quick_times_the_plain_and_the_fast_step_with_the_same_losses(tmp_path):
    module = load("host_overhead")
    with_baseline = has_revision(module.BASELINE)  # a clone without the history: this tree alone
    results = module.main(["--quick", "--profile", *([] if with_baseline else ["--baseline", "none"]), "--json", str(tmp_path / "out.json")])
    assert (tmp_path / "out.json").is_file()
    *before, plain, fast = results["variants"]
    if with_baseline:  # the model code after the host-overhead work computes the same losses as before it
        assert before[0]["name"].startswith("before") and before[0]["root"] != "this tree"
        assert plain["loss_difference"] <= 1e-6 and fast["loss_difference"] <= 1e-6
    assert (plain["fast_step"], fast["fast_step"]) == (False, True)
    for v in (plain, fast):
        assert v["timed_steps"] == 2 and v["median_s"] > 0 and len(v["fixed_seed_losses"]) == 3
    # the fast step changes the time only: the same losses from the same seed, to the last bit here
    assert fast["loss_difference"] <= 1e-6 and fast["fixed_seed_losses"] == plain["fixed_seed_losses"]
    profiles = results["profiles"]
    for name in (plain["name"], fast["name"]):
        parts = profiles[name]["parts"]
        assert parts["networks: forward"] > 0 and parts["backward (autograd)"] > 0 and parts["optimizer step"] > 0
        assert profiles[name]["aten_ops"] > 0
    # without the distribution checks the step reads far fewer values back (each a wait for the device on CUDA)
    reads = {name: profiles[name]["scalar_reads"] for name in profiles}
    assert "torch.distributions.distribution.__init__" in reads[plain["name"]]
    assert "torch.distributions.distribution.__init__" not in reads[fast["name"]]
    assert results["command"] in results["markdown"] and "| after: model + step |" in results["markdown"]


def test_gpu_throughput_imports_helps_and_times_bf16_and_the_host_step_on_a_cpu(capsys):
    gpu_throughput = load("gpu_throughput")
    with pytest.raises(SystemExit) as done:
        gpu_throughput.parse_args(["--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert "bf16-host" in help_text and "--variants" in help_text
    results = gpu_throughput.main(["--quick", "--threads", "1", "--tasks", "--batch-sizes", "4",
                                           "--variants", "default", "bf16", "host", "best"])  # fmt: skip
    rows = {r["variant"]: r for r in results["throughput"]}
    assert set(rows) == {"default", "bf16", "host", "best"} and all(r["status"] == "ok" for r in rows.values())
    assert (rows["bf16"]["precision"], rows["best"]["channels_last"], rows["host"]["host_step"]) == ("bf16", True, True)
    assert "| 4 | bf16 | bf16 | no | no |" in results["markdown"]
