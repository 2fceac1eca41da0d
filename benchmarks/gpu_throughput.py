"""Training throughput, peak GPU memory and epoch time of the chest X-ray ADGM on a CUDA GPU.

The model is the default convolutional ADGM at 225x225 (``ADGM(num_classes=K, image_size=225)``) trained by the
project's :class:`~pyro_adgm.training.Trainer` with ``TrainConfig(batch_size=B, device=...)`` (Adam, device
augmentation, TraceEnum_ELBO with y summed out for the unlabelled batch). The images are synthetic: uniformly
random uint8 pixels generated on the device, with random labels. The networks' cost does not depend on the pixel
values, so this is fine for timing, but the losses and accuracies mean nothing. All images (8,000 labelled +
16,000 unlabelled + 2,000 validation at 225x225, 1.2 GiB) stay resident on the device, as ``pyro-adgm train
--device cuda`` keeps them; the peak-memory figures include them (``resident_data_gib`` says how much).

1. Step throughput, 2 classes, batch sizes ``--batch-sizes``: one step is the next (labelled, unlabelled)
   batch from ``Trainer._batches`` (indexing, uint8 -> float, random flips and affine warps on the device) and
   the ADGM objective's ``step`` (one ``SVI.step``: forward, backward, Adam); unlike ``Trainer.train_epoch`` it leaves out
   the update of the weight average after each step (the epoch timing below includes it),
   with B labelled + B unlabelled images (the unlabelled set is cut to whole batches so that every step has
   the same shapes). After ``--warmup`` steps per variant (CUDA/cuDNN/cuBLAS start-up, cuDNN autotuning),
   ``--repeats`` blocks of ``--steps`` steps are timed per variant, with ``torch.cuda.synchronize()`` before and
   after each block; the step time is the median over blocks of block time / steps, images/s is 2B over it,
   and the peak memory is ``torch.cuda.max_memory_allocated`` over the variant's blocks. Variants
   (``--variants``) run in the same process on the same trainer, their blocks interleaved (A B, B A, ...):

   - ``default``: the backend flags as the process found them (PyTorch's defaults: ``cudnn.benchmark`` off,
     TF32 off for matmuls, on for cuDNN convolutions), float32, the trainer's step; this is what ``pyro-adgm
     train`` runs with;
   - ``fp32``: TF32 off everywhere, ``cudnn.benchmark`` off;
   - ``fast``: ``cudnn.benchmark`` on and TF32 on for matmuls and convolutions;
   - ``bf16``: the default flags, the networks under ``torch.autocast`` to bfloat16 (``--precision bf16``,
     :mod:`pyro_adgm.precision`); ``bf16-cl``: the same with the conv weights and the images channels-last;
   - ``host``: the default flags and float32, the step as the loop should run it to keep the GPU fed
     (``benchmarks/results/host_overhead.md``): :class:`~pyro_adgm.distributed.DataParallelOptim` around the
     trainer's AdamW (one multi-tensor optimiser instead of one per parameter) and
     ``step_context(validate=False)`` (no distribution checks, each of which waits for the device);
   - ``bf16-host``: ``bf16`` and ``host`` together; ``best``: ``fast`` flags, bf16, channels-last and ``host``.

   The variants with their own step (the ``host`` ones) share the trainer's model, each with its own optimiser
   state. ``--variants`` defaults to ``default fast bf16 host bf16-host`` (``default fast`` with ``--quick``).

   A batch size that runs out of memory is recorded as ``"OOM"`` and the run goes on.
2. One RSNA-sized epoch per task (2class: K=2, 3class: K=3) at ``--epoch-batch-size`` with the
   ``--epoch-variant`` flags: after ``--warmup`` untimed steps, one real ``Trainer.train_epoch()``
   (ceil(16,000 / B) steps) and ``Trainer.evaluate_epoch()`` (class probabilities of all labelled and
   validation images, bounds on 256 + 256 images) are timed, evaluation twice (the first call includes
   start-up costs of the evaluation shapes). The paper's run, ``PAPER_EPOCHS[task]`` x (train epoch +
   evaluation), is extrapolated from them; the 2class one (100 epochs) is compared with the 1-hour target.
   Not timed: reading the prepared data set from disk and copying it to the device, model construction, and
   the per-epoch work of ``Trainer.fit`` beyond these two calls (metrics.csv, two small checkpoints).

The epochs run first (they are the headline), then the throughput sweep; a measurement is not started when
``--max-seconds`` has passed or its estimated time would take the run past it (it is recorded as skipped).
Results go to stdout as markdown tables (ready for BENCHMARKS.md, with the exact command) and, with
``--json``, to a file.

    python benchmarks/gpu_throughput.py --json gpu.json    # on the GPU (meant to take under 5 minutes on an H200)
    python benchmarks/gpu_throughput.py --quick            # a smoke run on any device, small networks (tests use it)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI

from pyro_adgm.config import PAPER_EPOCHS
from pyro_adgm.distributed import DataParallelOptim
from pyro_adgm.model import ADGM
from pyro_adgm.precision import bf16_supported, step_context, to_channels_last
from pyro_adgm.training import TrainConfig, Trainer, TrainingData, resolve_device

TASKS = {"2class": 2, "3class": 3}
TARGET_HOURS = {"2class": 1.0}  # the paper's 2class run should take under an hour
FLAG_NAMES = ("cudnn_benchmark", "cudnn_allow_tf32", "matmul_allow_tf32")
FLAGS = {
    "found": None,  # the flags as the process found them
    "fp32": {"cudnn_benchmark": False, "cudnn_allow_tf32": False, "matmul_allow_tf32": False},
    "fast": {"cudnn_benchmark": True, "cudnn_allow_tf32": True, "matmul_allow_tf32": True},
}
#: name: (backend flags, precision, channels-last, the step of benchmarks/host_overhead.py's "model + step")
VARIANTS = {
    "default": ("found", "fp32", False, False),
    "fp32": ("fp32", "fp32", False, False),
    "fast": ("fast", "fp32", False, False),
    "bf16": ("found", "bf16", False, False),
    "bf16-cl": ("found", "bf16", True, False),
    "host": ("found", "fp32", False, True),
    "bf16-host": ("found", "bf16", False, True),
    "best": ("fast", "bf16", True, True),
}
DEFAULT_VARIANTS = ["default", "fast", "bf16", "host", "bf16-host"]
QUICK_VARIANTS = ["default", "fast"]
#: --quick: small networks (as the tests' SMALL_MODEL) so that the smoke run takes seconds on a CPU
QUICK_MODEL = {"a_dim": 8, "z_dim": 8, "channels": (8, 16, 32, 32, 32), "hidden": (32,)}
GIB = 2**30


# backend flags


def current_flags() -> dict:
    return {"cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}  # fmt: skip


def set_flags(flags: dict) -> None:
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]
    torch.backends.cudnn.allow_tf32 = flags["cudnn_allow_tf32"]
    torch.backends.cuda.matmul.allow_tf32 = flags["matmul_allow_tf32"]


def variant_flags(name: str, initial: dict) -> dict:
    return dict(FLAGS[VARIANTS[name][0]] or initial)


class Steps:
    """One trainer's step under each variant: its precision, memory layout and step (the objective's ``step``, or
    ``SVI.step`` with ``DataParallelOptim`` and no distribution checks for the ``host`` variants)."""

    def __init__(self, trainer: Trainer, device: torch.device):
        self.trainer, self.device = trainer, device
        self.plain_step = trainer.objective.step
        self.host_svi = None
        self.channels_last = False

    def set_layout(self, channels_last: bool) -> None:
        if channels_last != self.channels_last:
            self.trainer.model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            self.channels_last = channels_last

    def step_fn(self, name: str):
        """A function with the objective's ``step`` arguments that takes one step of variant ``name``."""
        _, precision, channels_last, host = VARIANTS[name]
        objective = self.trainer.objective
        if host and self.host_svi is None:
            optim = DataParallelOptim(pyro.optim.AdamW(objective.optimizer_settings))
            self.host_svi = SVI(objective.model.semi_supervised_model, objective.model.semi_supervised_guide, optim, objective.elbo)

        def step(batch, progress):
            if channels_last:
                batch = dataclasses.replace(batch, x_labelled=to_channels_last(batch.x_labelled),
                                            x_unlabelled=to_channels_last(batch.x_unlabelled) if batch.x_unlabelled is not None else None)  # fmt: skip
            with step_context(precision, self.device, validate=not host):
                if host:
                    arguments = objective.program_arguments(*objective.weights(progress))
                    return self.host_svi.step(batch.x_labelled, batch.y_labelled, batch.x_unlabelled, **arguments) / objective.images
                return self.plain_step(batch, progress)

        return step

    @contextlib.contextmanager
    def variant(self, name: str, initial: dict):
        """Flags, layout and step of variant ``name`` (the objective's ``step`` meanwhile); the flags restored after."""
        set_flags(variant_flags(name, initial))
        self.set_layout(VARIANTS[name][2])
        self.trainer.objective.step = self.step_fn(name)
        try:
            yield
        finally:
            self.trainer.objective.step = self.plain_step
            set_flags(initial)


# device helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def release(device: torch.device) -> None:
    """Drop what the last measurement left: Pyro's parameter store, garbage, the CUDA caching allocator's blocks."""
    pyro.clear_param_store()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in message or "CUDNN_STATUS_ALLOC_FAILED" in message)


# data and trainer


def synthetic_images(n: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Uniformly random uint8 pixels (n, size, size), made on the device."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 256, (n, size, size), dtype=torch.uint8, device=device, generator=generator)


def training_data(images: torch.Tensor, n_l: int, n_u: int, n_val: int, k: int) -> TrainingData:
    """Views of ``images``: the first n_l labelled, the next n_u unlabelled (at most), then n_val validation."""
    generator = torch.Generator().manual_seed(k)
    labels = torch.randint(0, k, (n_l + n_val,), generator=generator).to(images.device)
    start_val = len(images) - n_val
    return TrainingData(labelled_images=images[:n_l], labelled_labels=labels[:n_l],
                        unlabelled_images=images[n_l : n_l + n_u], val_images=images[start_val:],
                        val_labels=labels[n_l:], class_names=tuple(f"class {i}" for i in range(k)),
                        description={"synthetic": "uniform random uint8 pixels"})  # fmt: skip


def make_trainer(data: TrainingData, task: str, batch_size: int, args, device: torch.device, run_dir: str) -> Trainer:
    pyro.set_rng_seed(0)
    model = ADGM(num_classes=TASKS[task], image_size=args.image_size, **args.model_options)
    return Trainer(model, data, TrainConfig(task=task, batch_size=batch_size, device=str(device)), run_dir)


def batch_stream(trainer: Trainer):
    """The trainer's own batches, epoch after epoch."""
    generator = torch.Generator().manual_seed(0)
    while True:
        yield from trainer._batches(generator)


def run_steps(trainer: Trainer, stream, steps: int) -> int:
    """``steps`` training steps as train_epoch takes them (half-way through the warm-up: KL and unlabelled weights
    0.5, the same work as any positive weight); returns the number of images (labelled + unlabelled)."""
    images, progress = 0, trainer.config.warmup_epochs / 2
    for _ in range(steps):
        batch = next(stream)
        trainer.objective.step(batch, progress)  # svi.step returns a Python float: it waits for the GPU
        images += len(batch.x_labelled) + (len(batch.x_unlabelled) if batch.x_unlabelled is not None else 0)
    return images


def timed(device: torch.device, fn):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


# the measurements


def measure_throughput(images, batch_size: int, args, device: torch.device, initial: dict, run_dir: str) -> list[dict]:
    n_u = batch_size * max(1, args.unlabelled // batch_size)  # whole batches: the same shapes at every step
    data = training_data(images, args.labelled, n_u, args.val, 2)
    trainer = make_trainer(data, "2class", batch_size, args, device, run_dir)
    stream = batch_stream(trainer)
    steps = Steps(trainer, device)
    for name in args.variants:
        with steps.variant(name, initial):
            run_steps(trainer, stream, args.warmup)
    step_times = {name: [] for name in args.variants}
    peaks = {name: None for name in args.variants}
    images_per_step = {}
    for repeat in range(args.repeats):
        for name in args.variants if repeat % 2 == 0 else args.variants[::-1]:
            reset_peak(device)
            with steps.variant(name, initial):
                seconds, count = timed(device, lambda: run_steps(trainer, stream, args.steps))
            step_times[name].append(seconds / args.steps)
            images_per_step[name] = count / args.steps
            peak = peak_gib(device)
            peaks[name] = peak if peaks[name] is None else max(peaks[name], peak)
    steps.set_layout(False)
    rows = []
    for name in args.variants:
        median = statistics.median(step_times[name])
        _, precision, channels_last, host = VARIANTS[name]
        rows.append({"batch_size": batch_size, "variant": name, "flags": variant_flags(name, initial), "status": "ok",
                     "precision": precision, "channels_last": channels_last, "host_step": host,
                     "step_s": median, "step_s_min": min(step_times[name]), "step_s_max": max(step_times[name]),
                     "step_s_blocks": step_times[name], "images_per_step": images_per_step[name],
                     "images_per_s": images_per_step[name] / median, "peak_gib": peaks[name],
                     "labelled_batch": min(batch_size, args.labelled), "unlabelled_batch": batch_size})  # fmt: skip
    return rows


def measure_epoch(images, task: str, args, device: torch.device, initial: dict, run_dir: str) -> dict:
    data = training_data(images, args.labelled, args.unlabelled, args.val, TASKS[task])
    trainer = make_trainer(data, task, args.epoch_batch_size, args, device, run_dir)
    steps = Steps(trainer, device)
    with steps.variant(args.epoch_variant, initial):
        run_steps(trainer, batch_stream(trainer), args.warmup)
        reset_peak(device)
        train_s, train_row = timed(device, trainer.train_epoch)
        first_eval_s, _ = timed(device, trainer.evaluate_epoch)
        eval_s, eval_row = timed(device, trainer.evaluate_epoch)
    steps.set_layout(False)
    epochs = PAPER_EPOCHS.get(task, 200)
    paper_hours = epochs * (train_s + eval_s) / 3600
    target = TARGET_HOURS.get(task)
    return {"task": task, "num_classes": TASKS[task], "status": "ok", "variant": args.epoch_variant,
            "batch_size": args.epoch_batch_size, "labelled": args.labelled, "unlabelled": args.unlabelled,
            "val": args.val, "steps_per_epoch": trainer.steps_per_epoch, "train_epoch_s": train_s,
            "train_step_s": train_s / trainer.steps_per_epoch, "eval_s": eval_s, "first_eval_s": first_eval_s,
            "peak_gib": peak_gib(device), "train_loss": train_row["train_loss"],
            "val_accuracy": eval_row["val_accuracy"], "paper_epochs": epochs, "paper_run_hours": paper_hours,
            "target_hours": target, "meets_target": None if target is None else paper_hours <= target}  # fmt: skip


# the run


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cuda:N or cpu")
    parser.add_argument("--image-size", type=int, default=225)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per variant and batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before timing")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help=f"default: {' '.join(DEFAULT_VARIANTS)} "
                        f"({' '.join(QUICK_VARIANTS)} with --quick)")  # fmt: skip
    parser.add_argument("--tasks", nargs="*", choices=list(TASKS), default=list(TASKS), help="epochs to time (none: skip)")
    parser.add_argument("--epoch-batch-size", type=int, default=128)
    parser.add_argument("--epoch-variant", choices=list(VARIANTS), default="default")
    parser.add_argument("--labelled", type=int, default=8000)
    parser.add_argument("--unlabelled", type=int, default=16000)
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="start no measurement after this (or "
                        "that would be estimated to end after it)")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: as torch chooses)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 32x32, batch sizes 4 and 8, 2 steps, small "
                        "networks, an epoch of 16 labelled + 32 unlabelled images")  # fmt: skip
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    args.model_options = {}
    if args.quick:
        args.image_size, args.batch_sizes, args.steps, args.repeats, args.warmup = 32, [4, 8], 2, 2, 1
        args.labelled, args.unlabelled, args.val, args.epoch_batch_size = 16, 32, 8, 8
        args.model_options = dict(QUICK_MODEL)
    if min(args.batch_sizes + [args.epoch_batch_size, args.steps, args.repeats, args.labelled, args.unlabelled, args.val]) < 1:
        parser.error("batch sizes, --steps, --repeats, --labelled, --unlabelled and --val must be positive")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    args.variants = list(dict.fromkeys(args.variants or (QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS)))
    return args


def environment(device: torch.device, initial: dict) -> dict:
    cuda = device.type == "cuda"
    return {"device": str(device), "gpu": torch.cuda.get_device_name(device) if cuda else None,
            "gpu_memory_gib": torch.cuda.get_device_properties(device).total_memory / GIB if cuda else None,
            "torch": torch.__version__, "pyro": pyro.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "cpu_threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "initial_flags": initial}  # fmt: skip


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} GiB"


def markdown(results: dict) -> str:
    env, s = results["environment"], results["settings"]
    where = f"{env['gpu']} ({env['gpu_memory_gib']:.0f} GiB)" if env["gpu"] else f"{env['device']} (no GPU: memory n/a)"
    lines = [f"`{results['command']}`", "",
             f"{where}, torch {env['torch']} (built with CUDA {env['cuda']}), cuDNN {env['cudnn']}, Pyro {env['pyro']}. "
             f"Synthetic uint8 pixels at {s['image_size']}x{s['image_size']}, resident on the device "
             f"({results['resident_data_gib']:.2f} GiB, included in the peaks).", ""]  # fmt: skip
    if results["epochs"]:
        lines += [f"One epoch: {s['labelled']:,} labelled + {s['unlabelled']:,} unlabelled images, {s['val']:,} "
                  f"validation; batch {s['epoch_batch_size']}, variant `{s['epoch_variant']}`; evaluation = "
                  f"`Trainer.evaluate_epoch()` (its second call).", "",
                  "| task | steps/epoch | train epoch (s) | s/step | evaluation (s) | peak GPU memory (GiB) | paper run | "
                  "extrapolated (h) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in results["epochs"]:
            if r["status"] != "ok":
                lines.append(f"| {r['task']} | {r['status']} | | | | | | |")
                continue
            verdict = "" if r["target_hours"] is None else f"; {'under' if r['meets_target'] else 'over'} the {r['target_hours']:g} h target"
            lines.append(f"| {r['task']} | {r['steps_per_epoch']} | {r['train_epoch_s']:.1f} | {r['train_step_s']:.3f} | "
                         f"{r['eval_s']:.1f} | {fmt(r['peak_gib'], 2)} | {r['paper_epochs']} epochs | "
                         f"{r['paper_run_hours']:.2f} ({60 * r['paper_run_hours']:.0f} min{verdict}) |")  # fmt: skip
        lines.append("")
    if results["throughput"]:
        base = results["settings"]["variants"][0]
        lines += [f"Training steps, 2 classes: B labelled + B unlabelled images per step; median of {s['repeats']} "
                  f"blocks of {s['steps']} steps after {s['warmup']} warm-up steps per variant; variants interleaved "
                  f"in one process; speed-up against `{base}`.", "",
                  "| batch B | variant | precision | channels-last | host step | s/step | images/s | speed-up | peak GPU memory (GiB) |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        steps = {(r["batch_size"], r["variant"]): r.get("step_s") for r in results["throughput"]}
        for r in results["throughput"]:
            _, precision, channels_last, host = VARIANTS[r["variant"]]
            described = f"{precision} | {'yes' if channels_last else 'no'} | {'yes' if host else 'no'}"
            if r["status"] != "ok":
                lines.append(f"| {r['batch_size']} | {r['variant']} | {described} | {r['status']} | | | |")
                continue
            ref = steps.get((r["batch_size"], base))
            ratio = f"{ref / r['step_s']:.2f}x" if ref else "n/a"
            lines.append(f"| {r['batch_size']} | {r['variant']} | {described} | {r['step_s']:.4f} | {r['images_per_s']:.0f} | "
                         f"{ratio} | {fmt(r['peak_gib'], 2)} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args, argv)
    finally:
        torch.set_num_threads(threads)


def run(args, argv: list[str]) -> dict:
    device = resolve_device(args.device)
    if device.type != "cuda" and args.device == "auto" and not args.quick:
        raise SystemExit("no CUDA device: this benchmark is for a GPU (--quick for a smoke run, --device cpu to insist)")
    unsupported = [name for name in args.variants + [args.epoch_variant] if VARIANTS[name][1] == "bf16" and not bf16_supported(device)]
    if unsupported:
        raise SystemExit(f"{device}: no bfloat16 support for variant(s) {', '.join(dict.fromkeys(unsupported))}")
    start = time.perf_counter()
    initial = current_flags()
    results = {"command": shlex.join(["python", "benchmarks/gpu_throughput.py", *argv]),
               "environment": environment(device, initial),
               "settings": {k: v for k, v in vars(args).items() if k != "json"}, "epochs": [], "throughput": []}  # fmt: skip
    env = results["environment"]
    print(f"{env['gpu'] or env['device']}: torch {env['torch']} (built with CUDA {env['cuda']}, cuDNN {env['cudnn']}), "
          f"pyro {env['pyro']}, flags at start {initial}", flush=True)  # fmt: skip

    def over_budget(estimate: float = 0.0) -> bool:
        return time.perf_counter() - start + estimate > args.max_seconds

    torch.manual_seed(0)
    images = synthetic_images(args.labelled + args.unlabelled + args.val, args.image_size, device)
    results["resident_data_gib"] = images.numel() * images.element_size() / GIB
    with tempfile.TemporaryDirectory(prefix="gpu-throughput-") as run_dir:
        last_epoch_s = 0.0
        for task in args.tasks:
            if over_budget(last_epoch_s):
                row = {"task": task, "num_classes": TASKS[task], "status": "skipped (time budget)"}
            else:
                t0 = time.perf_counter()
                try:
                    row = measure_epoch(images, task, args, device, initial, run_dir)
                except RuntimeError as error:
                    if not is_oom(error):
                        raise
                    row = {"task": task, "num_classes": TASKS[task], "status": "OOM", "error": str(error).splitlines()[0]}
                set_flags(initial)
                release(device)
                last_epoch_s = time.perf_counter() - t0
            results["epochs"].append(row)
            print(f"epoch {task}: " + (f"train {row['train_epoch_s']:.2f} s ({row['steps_per_epoch']} steps), "
                  f"evaluation {row['eval_s']:.2f} s (first call {row['first_eval_s']:.2f} s), peak GPU "
                  f"memory {gib(row['peak_gib'])}; paper run of {row['paper_epochs']} epochs: "
                  f"{row['paper_run_hours']:.2f} h ({60 * row['paper_run_hours']:.0f} min)" if row["status"] == "ok" else row["status"]), flush=True)  # fmt: skip

        per_step_images = None  # seconds per image of the last measured batch size, for the budget estimate
        for batch_size in args.batch_sizes:
            planned_steps = len(args.variants) * (args.warmup + args.repeats * args.steps)
            estimate = 0.0 if per_step_images is None else per_step_images * 2 * batch_size * planned_steps
            if over_budget(estimate):
                rows = [{"batch_size": batch_size, "variant": name, "status": "skipped (time budget)"} for name in args.variants]
            else:
                try:
                    rows = measure_throughput(images, batch_size, args, device, initial, run_dir)
                except RuntimeError as error:
                    if not is_oom(error):
                        raise
                    rows = [{"batch_size": batch_size, "variant": name, "status": "OOM", "error": str(error).splitlines()[0]}
                            for name in args.variants]  # fmt: skip
                set_flags(initial)
                release(device)
            for row in rows:
                if row["status"] == "ok":
                    per_step_images = row["step_s"] / row["images_per_step"]
                    print(f"batch {batch_size} {row['variant']}: {row['step_s']:.4f} s/step "
                          f"(blocks {', '.join(f'{t:.4f}' for t in row['step_s_blocks'])}), {row['images_per_s']:.0f} "
                          f"images/s, peak GPU memory {gib(row['peak_gib'])}", flush=True)  # fmt: skip
                else:
                    print(f"batch {batch_size} {row['variant']}: {row['status']}", flush=True)
            results["throughput"].extend(rows)
    del images
    release(device)
    results["total_seconds"] = time.perf_counter() - start
    results["markdown"] = markdown(results)
    print(f"\n{results['markdown']}\n\ntotal {results['total_seconds']:.1f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
