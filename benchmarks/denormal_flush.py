"""CPU training steps with and without flushing denormal floats to zero, from a long run's checkpoint.

Long CPU runs slowed down epoch after epoch (MNIST example: 66 s per epoch early, 195 s by epoch 56, alone on
the core). Weights and Adam moments of inputs that never fire (MNIST's border pixels) decay into the denormal
range, where x86 arithmetic is many times slower. This loads the run's ``last.pt`` (weights, optimiser state)
into the MNIST example's model and trainer, then times training steps with ``torch.set_flush_denormal`` off and
on, in alternating blocks, and reports medians and the ratio. It also counts the denormal values in the
checkpoint.

    python benchmarks/denormal_flush.py --run runs/mnist-100labels --steps 20 --repeats 3
    python benchmarks/denormal_flush.py --quick        # a fresh tiny model, a smoke run (tests use it)
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import time
from pathlib import Path

import torch

from pyro_adgm.checkpoint import load_checkpoint
from pyro_adgm.training import Trainer

ROOT = Path(__file__).resolve().parents[1]


def example():
    spec = importlib.util.spec_from_file_location("mnist_example", ROOT / "examples" / "mnist_100_labels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def denormal_count(state: dict) -> tuple[int, int]:
    """(denormal values, all values) over the floating-point tensors nested in ``state``."""
    tiny, found, total = torch.finfo(torch.float32).tiny, 0, 0
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif torch.is_tensor(item) and item.dtype == torch.float32:
            found += int(((item != 0) & (item.abs() < tiny)).sum())
            total += item.numel()
    return found, total


def time_steps(trainer: Trainer, steps: int) -> float:
    batches = trainer._batches(torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for _ in range(steps):
        trainer.objective.step(next(batches), progress=math.inf)  # past the warm-up: full weights
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/mnist-100labels"), help="an MNIST example run")
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding MNIST/raw (default: the example's)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    mnist = example()
    images, labels, _, _ = mnist.load_mnist(args.data_root or mnist.DEFAULT_DATA_ROOT)
    if args.quick:
        data = mnist.mnist_training_data(images, labels, 10, seed=0, train_size=1000, val_size=100)
        model, state, args.steps, args.repeats = mnist.build_model(a_dim=8, z_dim=8, hidden=(64, 64)), None, 2, 1
    else:
        data = mnist.mnist_training_data(images, labels, 10, seed=0)
        model, state = mnist.build_model(), load_checkpoint(args.run / "last.pt")
    config = mnist.training_config(mnist.parse_args(["--device", "cpu"]), epochs=1)  # the example's defaults
    trainer = Trainer(model, data, config, run_dir=ROOT / "runs" / "denormal-flush-unused")  # nothing is written
    if state is not None:
        if "objective_state" not in state:  # a version-1 checkpoint: the ADGM's optimiser state under another key
            state = {**state, "objective_state": {"optimizer": state["optimizer_state"]}}
        trainer.load_state(state)
    found, total = denormal_count(state) if state is not None else (0, 0)
    times = {False: [], True: []}
    try:
        for _ in range(args.repeats):
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                times[flush].append(time_steps(trainer, args.steps))
    finally:
        torch.set_flush_denormal(False)  # as the process started (a run flushes denormals only while it trains)
    result = {"denormal_values": found, "float_values": total, "steps": args.steps, "repeats": args.repeats,
              "step_s_no_flush": statistics.median(times[False]), "step_s_flush": statistics.median(times[True])}  # fmt: skip
    result["ratio_no_flush_over_flush"] = result["step_s_no_flush"] / result["step_s_flush"]
    print(f"checkpoint: {found:,} denormal of {total:,} float32 values; step {result['step_s_no_flush']:.4f} s without "
          f"flushing, {result['step_s_flush']:.4f} s with (x{result['ratio_no_flush_over_flush']:.2f}; medians of "
          f"{args.repeats} alternating blocks of {args.steps} steps)")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
