"""The host's share of a training step: where a small step's time goes on a CPU, and before against after.

At 16x16 with small networks (the tests' sizes: ``--widths small``) the arithmetic of a step is negligible, so
its time on a CPU is what a GPU would wait for while the host runs Python, Pyro's tracing and enumeration and
PyTorch's dispatch of every op; ``--widths default`` times the product's default widths at the same size, where
the CPU's arithmetic is no longer negligible. One step is what the ADGM objective's ``step`` runs: ``SVI.step``
over a labelled and an unlabelled batch of ``--batch-size`` images each (TraceEnum_ELBO with y summed out for
the unlabelled one), with Pyro's AdamW and the trainer's per-parameter settings.

Each variant runs in its own worker process, built from a source tree (``--baseline``: a git revision, extracted
with ``git archive``; the variants after it use this working tree):

- ``before``: the baseline revision's code, the plain step;
- ``after: model``: this tree's model code, the plain step (Pyro's AdamW, one torch optimiser per parameter, and
  the distribution checks on);
- ``after: model + step``: this tree, the step as ``ADGMObjective.step`` runs it after a run's first step:
  ``DataParallelOptim`` around the optimiser (one multi-tensor AdamW per settings instead of one per parameter)
  and ``step_context(validate=False)`` (no distribution checks, each of which reads a value back from the device);
- ``after: model + step, compiled networks`` (with ``--compile``): the same, with each of the five networks
  compiled by ``torch.compile`` (``nn.Module.compile``, TorchInductor; Pyro's programs stay eager). Its first
  steps compile; its dropout draws come from the compiled kernels' own generator, so its fixed-seed losses are
  reported but not held to ``--tolerance``.

Every worker first takes 3 steps from the same seed and the same initial weights; their losses must agree with
the baseline's to ``--tolerance`` (relative), or the run stops: the changes may only change the time. Then the
workers take turns, a block of ``--steps`` timed steps each, ``--repeats`` times (order A B C, C B A, ...), so
that all see the same machine load; the medians over all timed steps and their ratios are reported. With
``--profile`` each worker also reports a breakdown of its step (exclusive time in the step's parts, measured by
wrapping them; the scalar reads of tensor values, which on CUDA each wait for the device; the number of ATen ops
from ``torch.profiler``).

    python benchmarks/host_overhead.py --profile --markdown benchmarks/results/host_overhead_table.md
    python benchmarks/host_overhead.py --quick      # a smoke run (tests use it)
    python benchmarks/host_overhead.py --compile --repeats 20 --steps 10    # with torch.compile on the networks
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the code before the host-overhead work of issue 22 (the commit before its first change)
BASELINE = "720860c"
WIDTHS = {
    "small": {"a_dim": 8, "z_dim": 8, "channels": (8, 16, 32, 32, 32), "hidden": (32,)},  # tests/conftest.py SMALL_MODEL
    "default": {},
}
STEP = {"labelled_size": 1000, "unlabelled_size": 20000, "kl_weight": 0.5, "alpha": 21.0, "unlabelled_weight": 1.0}
SEED = 3


# the worker: one variant, in its own process


def optim_args(name: str) -> dict:
    """The trainer's AdamW settings (TrainConfig defaults): lr 1e-4, the class prior's 1e-2 and no decay for it."""
    prior = name.endswith("class_prior_logits")
    return {"lr": 1e-2 if prior else 1e-4, "betas": (0.9, 0.999), "weight_decay": 0.0 if prior else 1e-5}


def import_model_code(root: str) -> None:
    """Make ``import pyro_adgm.model`` (and the other modules a step needs) read ``root``'s sources, without
    running the package's ``__init__`` (which imports the CLI's, plotting and data modules: seconds per worker)."""
    package = types.ModuleType("pyro_adgm")
    package.__path__ = [str(Path(root) / "pyro_adgm")]
    sys.modules["pyro_adgm"] = package
    sys.path.insert(0, root)


class Worker:
    def __init__(self, root: str, widths: str, image_size: int, batch_size: int, fast: bool, compiled: bool = False):
        import_model_code(root)
        import pyro
        import torch
        from pyro.infer import SVI, TraceEnum_ELBO

        from pyro_adgm.model import ADGM

        torch.set_num_threads(1)
        torch.set_flush_denormal(True)  # as the trainer does on a CPU
        self.torch, self.pyro, self.fast = torch, pyro, fast
        pyro.clear_param_store()
        torch.manual_seed(0)
        self.model = ADGM(num_classes=2, image_size=image_size, **WIDTHS[widths])
        generator = torch.Generator().manual_seed(1)
        shape = (batch_size, 1, image_size, image_size)
        self.batch = (torch.rand(shape, generator=generator), torch.arange(batch_size) % 2, torch.rand(shape, generator=generator))
        optim = pyro.optim.AdamW(optim_args)
        self.context = contextlib.nullcontext
        if fast:
            from pyro_adgm.distributed import DataParallelOptim
            from pyro_adgm.precision import step_context

            optim = DataParallelOptim(optim)
            self.context = lambda: step_context("fp32", "cpu", validate=False)
        if compiled:
            from pyro_adgm.model import NETWORK_NAMES

            for name in NETWORK_NAMES:
                getattr(self.model, name).compile(dynamic=False)
        self.svi = SVI(self.model.semi_supervised_model, self.model.semi_supervised_guide, optim, TraceEnum_ELBO(max_plate_nesting=1))

    def step(self) -> float:
        with self.context():
            return self.svi.step(*self.batch, **STEP)

    def fixed_seed_losses(self, n: int = 3) -> list[float]:
        self.pyro.set_rng_seed(SEED)
        return [self.step() for _ in range(n)]

    def timed(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - start)
        return times

    def counts(self) -> dict:
        return {"scalar_reads": self.scalar_reads(), **self.aten_ops()}

    def parts(self, n: int) -> dict:
        """Exclusive seconds in each part of ``n`` steps (a part's time excludes the parts it calls), summed."""
        import pyro.infer.svi
        import pyro.primitives

        from pyro_adgm.model import ADGM, NETWORK_NAMES

        spent: dict[str, float] = {}
        stack: list[list] = []

        def wrap(fn, part):
            @functools.wraps(fn)
            def wrapped(*args, **kwargs):
                now = time.perf_counter()
                if stack:
                    spent[stack[-1][0]] = spent.get(stack[-1][0], 0.0) + now - stack[-1][1]
                stack.append([part, now])
                try:
                    return fn(*args, **kwargs)
                finally:
                    now = time.perf_counter()
                    name, since = stack.pop()
                    spent[name] = spent.get(name, 0.0) + now - since
                    if stack:
                        stack[-1][1] = now

            return wrapped

        patches = [(pyro.infer.svi.SVI, "step", "SVI.step: parameter capture, zeroing gradients"),
                   (ADGM, "model", "model/guide programs: sample sites, plates, scales"),
                   (ADGM, "guide", "model/guide programs: sample sites, plates, scales"),
                   (pyro, "module", "parameter registration (pyro.module/pyro.param)"),
                   (pyro, "param", "parameter registration (pyro.module/pyro.param)"),
                   (pyro.primitives, "param", "parameter registration (pyro.module/pyro.param)"),
                   (self.torch.Tensor, "backward", "backward (autograd)"),
                   (type(self.svi.optim), "__call__", "optimizer step"),
                   (type(self.model.likelihood), "__call__", "networks: forward")]  # fmt: skip
        originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches if name in owner.__dict__]
        try:
            for owner, name, part in patches:
                if name in owner.__dict__:
                    setattr(owner, name, wrap(owner.__dict__[name], part))
            for name in NETWORK_NAMES:
                net = getattr(self.model, name)
                net.forward = wrap(net.forward, "networks: forward")
            # SVI holds the ELBO's bound method: wrapped on the instance
            self.svi.loss_and_grads = wrap(self.svi.loss_and_grads, "TraceEnum_ELBO: traces, enumeration, log densities, contraction")
            self.step()
            spent.clear()
            start = time.perf_counter()
            for _ in range(n):
                self.step()
            total = time.perf_counter() - start
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)
            for name in NETWORK_NAMES:
                del getattr(self.model, name).forward
            self.svi.loss_and_grads = self.svi.loss_and_grads.__wrapped__
        parts = dict(spent)
        parts["rest of the step"] = max(0.0, total - sum(parts.values()))
        return {"parts": parts, "steps": n}

    def scalar_reads(self) -> dict:
        """Reads of a tensor's value into Python in one step (item, bool, ...), by the function that asked.

        On CUDA each read of a device tensor waits until the device has run everything queued before it."""
        from torch.overrides import TorchFunctionMode

        torch = self.torch
        reads: dict[str, int] = {}
        names = {"item", "__bool__", "__float__", "__int__", "tolist", "_is_all_true", "_is_any_true"}

        class Count(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", "")
                if name in names:
                    frame = sys._getframe(1)
                    while frame and ("torch/overrides" in frame.f_code.co_filename or "torch/_tensor" in frame.f_code.co_filename):
                        frame = frame.f_back
                    where = frame.f_code.co_filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
                    key = f"{where.removesuffix('.py').replace('/', '.')}.{frame.f_code.co_name}"
                    reads[key] = reads.get(key, 0) + 1
                return func(*args, **(kwargs or {}))

        self.step()
        with Count():
            self.step()
        del torch
        return dict(sorted(reads.items(), key=lambda kv: -kv[1]))

    def aten_ops(self) -> dict:
        """ATen ops of one step (torch.profiler): those dispatched from Python or autograd (on CUDA each a kernel
        launch, or a view), and all of them, the ones those call included."""
        from torch.profiler import ProfilerActivity, profile

        self.step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            self.step()
        events = [e for e in prof.events() if e.name.startswith("aten::")]
        top = [e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
        return {"aten_ops": len(top), "aten_ops_all_levels": len(events)}


def worker_main(args) -> None:
    try:
        worker = Worker(args.root, args.widths, args.image_size, args.batch_size, args.fast, args.compiled)
        reply({"losses": worker.fixed_seed_losses()})
        for line in sys.stdin:
            command, _, value = line.strip().partition(" ")
            if command == "steps":
                reply({"times": worker.timed(int(value))})
            elif command == "parts":
                reply(worker.parts(int(value)))
            elif command == "counts":
                reply(worker.counts())
            else:
                return
    except Exception:
        reply({"error": traceback.format_exc()})


def reply(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# the parent: variants in turn


def extract(revision: str, into: Path) -> Path:
    """The package sources at ``revision`` (``git archive``), as a tree a worker can import from."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "pyro_adgm", "data_tools"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {revision}: not in this repository ({archive.stderr.decode().strip()}); pass --baseline none")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


class Variant:
    def __init__(self, name: str, root: Path, fast: bool, args, compiled: bool = False):
        self.name, self.root, self.fast, self.compiled = name, root, fast, compiled
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--root", str(root), "--widths", args.widths,
                   "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)] + (["--fast"] if fast else []) + (["--compiled"] if compiled else [])  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())
        self.losses: list[float] = []
        self.times: list[float] = []

    def ready(self) -> None:
        """Wait for the worker's start: its model built and its fixed-seed losses."""
        self.losses = self.receive()["losses"]

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name}: the worker ended without a reply (exit code {self.process.wait()})")
        obj = json.loads(line)
        if "error" in obj:
            raise SystemExit(f"{self.name}: the worker failed:\n{obj['error']}")
        return obj

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        self.process.wait(timeout=60)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision of the 'before' code (default {BASELINE}, the "
                        "code before the host-overhead work); 'none': compare this tree's plain and fast steps only")  # fmt: skip
    parser.add_argument("--widths", choices=list(WIDTHS), default="small")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10, help="timed blocks per variant, interleaved")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per variant first")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="relative difference allowed between the variants' fixed-seed losses")
    parser.add_argument("--profile", action="store_true", help="also break each variant's step down")
    parser.add_argument("--profile-steps", type=int, default=2, help="profiled steps per block (as many blocks as --repeats)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 block of 2 steps, no warm-up, the profile on 1 step")
    parser.add_argument("--compile", action="store_true", help="also time the fast step with the five networks under torch.compile")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--markdown", help="also write the tables here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.warmup, args.profile_steps = 1, 2, 0, 1
    if min(args.repeats, args.steps, args.profile_steps) < 1 or args.warmup < 0:
        parser.error("--repeats, --steps and --profile-steps must be positive, --warmup >= 0")
    return args


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="host-overhead-") as tmp:
        plans = [("after: model", ROOT, False, False), ("after: model + step", ROOT, True, False)]
        if args.compile:
            plans.append(("after: model + step, compiled networks", ROOT, True, True))
        if args.baseline != "none":
            plans.insert(0, (f"before ({args.baseline})", extract(args.baseline, Path(tmp)), False, False))
        variants = []
        try:
            for name, root, fast, compiled in plans:  # the workers start side by side (imports take a while)
                variants.append(Variant(name, root, fast, args, compiled))
            for v in variants:
                v.ready()
            reference = variants[0].losses
            for v in variants:
                differences = [abs(a - b) / abs(b) for a, b in zip(v.losses, reference)]
                v.loss_difference = max(differences)
                if v.loss_difference > args.tolerance and not v.compiled:
                    raise SystemExit(f"{v.name}: the fixed-seed losses {v.losses} differ from {variants[0].name}'s {reference} "
                                     f"by {v.loss_difference:.2e} (relative), more than --tolerance {args.tolerance:g}")  # fmt: skip
            for v in variants:
                v.ask(f"steps {args.warmup}") if args.warmup else None
            for block in range(args.repeats):
                for v in variants if block % 2 == 0 else variants[::-1]:
                    v.times += v.ask(f"steps {args.steps}")["times"]
            profiles = {}
            if args.profile:  # interleaved like the timings; the wrapped steps are not among those timed
                sums = {v.name: {} for v in variants}
                for block in range(args.repeats):
                    for v in variants if block % 2 == 0 else variants[::-1]:
                        for part, seconds in v.ask(f"parts {args.profile_steps}")["parts"].items():
                            sums[v.name][part] = sums[v.name].get(part, 0.0) + seconds
                steps = args.repeats * args.profile_steps
                for v in variants:
                    parts = {part: seconds / steps for part, seconds in sorted(sums[v.name].items(), key=lambda kv: -kv[1])}
                    profiles[v.name] = {"parts": parts, "profiled_steps": steps, **v.ask("counts")}
        finally:
            for v in variants:
                v.close()
    base = statistics.median(variants[0].times)
    results = {
        "command": shlex.join(["python", "benchmarks/host_overhead.py", *argv]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "root", "fast", "compiled", "json", "markdown")},
        "model": {"num_classes": 2, "image_size": args.image_size, **{k: list(v) if isinstance(v, tuple) else v for k, v in WIDTHS[args.widths].items()}},
        "step_arguments": STEP,
        "environment": environment(),
        "variants": [{"name": v.name, "fast_step": v.fast, "compiled_networks": v.compiled, "root": "this tree" if v.root == ROOT else args.baseline,
                      "fixed_seed_losses": v.losses, "loss_difference": v.loss_difference,
                      "median_s": statistics.median(v.times), "min_s": min(v.times), "max_s": max(v.times),
                      "timed_steps": len(v.times), "speedup": base / statistics.median(v.times)} for v in variants],  # fmt: skip
        "profiles": profiles,
    }
    results["seconds"] = time.perf_counter() - started
    results["markdown"] = markdown(results)
    print(results["markdown"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(results["markdown"] + "\n")
    return results


def environment() -> dict:
    import platform

    import pyro
    import torch

    return {"torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads_per_worker": 1,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}  # fmt: skip


def markdown(results: dict) -> str:
    s, env = results["settings"], results["environment"]
    widths = ", ".join(f"{k} {v}" for k, v in results["model"].items())
    lines = [f"`{results['command']}`", "",
             f"torch {env['torch']}, Pyro {env['pyro']}, Python {env['python']}, {env['cpu_count']} CPU cores, 1 thread per "
             f"worker, load average at the end {', '.join(f'{x:.1f}' for x in env['load_average'] or [])}. Model: {widths}; "
             f"batches of {s['batch_size']} labelled + {s['batch_size']} unlabelled images; {s['repeats']} blocks of "
             f"{s['steps']} steps per variant, interleaved, after {s['warmup']} warm-up steps.", "",
             "| variant | code | step | median (ms) | min (ms) | speed-up | fixed-seed losses (3 steps) | max rel. difference |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for v in results["variants"]:
        step = "DataParallelOptim + step_context(validate=False)" if v["fast_step"] else "plain SVI.step"
        step += ", torch.compile on the networks" if v.get("compiled_networks") else ""
        losses = ", ".join(f"{x:.2f}" for x in v["fixed_seed_losses"])
        lines.append(f"| {v['name']} | {v['root']} | {step} | {1000 * v['median_s']:.1f} | {1000 * v['min_s']:.1f} | "
                     f"{v['speedup']:.2f}x | {losses} | {v['loss_difference']:.1e} |")  # fmt: skip
    profiles = results["profiles"]
    if profiles:
        names = list(profiles)
        parts = list(dict.fromkeys(part for p in profiles.values() for part in p["parts"]))
        lines += ["", f"Exclusive time per step in each part (ms; mean of {s['repeats']} x {s['profile_steps']} steps per "
                  "variant, interleaved like the timings; the parts are timed by wrapping them, which makes these steps a "
                  "little slower than the timed ones):", "", "| part | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]  # fmt: skip
        for part in parts + ["total"]:
            cells = []
            for name in names:
                total = sum(profiles[name]["parts"].values())
                value = total if part == "total" else profiles[name]["parts"].get(part, 0.0)
                cells.append(f"{1000 * value:.1f}" + ("" if part == "total" else f" ({100 * value / total:.0f}%)"))
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
        lines += ["", "ATen ops per step (torch.profiler; dispatched from Python or autograd, each a kernel launch or a view "
                  "on CUDA; and with the ops they call): " + "; ".join(f"{n}: {profiles[n]['aten_ops']} ({profiles[n]['aten_ops_all_levels']})" for n in names),
                  "", "Reads of tensor values into Python per step, by caller (on CUDA each read of a device tensor waits "
                  "for the device; the optimiser's step counters are CPU tensors):", "",
                  "| caller | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]  # fmt: skip
        callers = list(dict.fromkeys(c for p in profiles.values() for c in p["scalar_reads"]))
        for caller in callers + ["total"]:
            cells = [str(sum(profiles[n]["scalar_reads"].values()) if caller == "total" else profiles[n]["scalar_reads"].get(caller, 0)) for n in names]
            lines.append(f"| `{caller}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
