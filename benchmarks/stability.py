"""Does validation accuracy hold to the end of training? Per-epoch curves for several training settings.

Runs ``pyro-adgm train --config OUT/RUN.json`` (the setting's TrainConfig settings) on a prepared dataset
(PneumoniaMNIST by default) for each labels-per-class count and each setting below, as parallel processes (``--jobs``, each with ``--threads`` CPU threads), then summarises
every run's ``metrics.csv``: best and final validation accuracy, the mean and sd of validation accuracy after
the warm-up (over the epochs every run finished), and the mean absolute change from one epoch to the next.
Runs cut short (``--seconds`` stops a run's process, losing the epoch in progress) are summarised over the
epochs they finished. One seed per setting (`--seed`): differences of a point or two are within run-to-run noise.
An existing run folder makes ``pyro-adgm train`` refuse (see the log): use a new ``--out`` for new runs. Writes ``stability.csv``, ``stability.md`` and ``stability.png``. Runs made
before `--augment-probability` existed transformed every training image: ``--augment-probability 1`` repeats them.

    python benchmarks/stability.py --labels 10 50 100 --epochs 40 --seconds 440 --device cpu --jobs 8 --threads 2
    python benchmarks/stability.py --summarise-only --out runs/stability     # tables and plot of finished runs
    python benchmarks/stability.py --quick                                    # a smoke run (tests use it)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = ROOT.parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_28.npz"

#: p(y) options: the paper's (fixed uniform p(y), labels as they are), the learned p(y)
#: alone, and the learned p(y) with each labelled image's classification term weighted by K * p(y) (the defaults before the root fixes)
UNIFORM = {"class_prior": "uniform", "label_weights": "equal"}
LEARNED = {"class_prior": "learned", "label_weights": "equal"}
LEARNED_WEIGHTED = {"class_prior": "learned", "label_weights": "prior"}
#: p(y) fixed at PneumoniaMNIST's known class shares (train and val: 74.2% pneumonia), labels weighted by it
KNOWN_WEIGHTED = {"class_prior": "normal=0.258,abnormal=0.742", "label_weights": "prior"}
BOUND_AVG = {"weight_average_decay": 0.999}

#: name -> the TrainConfig settings of the run (written to OUT/NAME.json, given to `pyro-adgm train --config`).
#: The balanced-avg, balanced-avg-beta0.1, bound-avg-cosine and bound-avg-warmup-cosine settings of BENCHMARKS.md
#: need commit ec68456, the last with them; bound-avg-aug0.5-learned-prior-weighted-sdgm commit 6a673a1.
SETTINGS = {
    "bound-raw": {"weight_average_decay": None, **UNIFORM},
    "bound-avg": {**BOUND_AVG, **UNIFORM},
    # every training image transformed (the default before the augmentation probability existed) or half of them
    "bound-avg-aug1": {**BOUND_AVG, "augment_probability": 1.0, **UNIFORM},
    "bound-avg-aug1-learned-prior": {**BOUND_AVG, "augment_probability": 1.0, **LEARNED},
    "bound-avg-aug0.5": {**BOUND_AVG, "augment_probability": 0.5, **UNIFORM},
    "bound-avg-aug0.5-learned-prior": {**BOUND_AVG, "augment_probability": 0.5, **LEARNED},
    "bound-avg-aug0.5-learned-prior-weighted": {**BOUND_AVG, "augment_probability": 0.5, **LEARNED_WEIGHTED},
    "bound-avg-aug0.5-learned-prior-weighted-beta10": {**BOUND_AVG, "augment_probability": 0.5, **LEARNED_WEIGHTED, "beta": 10.0},
    "bound-avg-aug0.5-known-prior-weighted": {**BOUND_AVG, "augment_probability": 0.5, **KNOWN_WEIGHTED},
    # the supervised baseline on the same schedule (its curve tells drift from the unlabelled term apart from
    # overfitting the few labelled images): p(y) uniform, or the known shares weighting its cross-entropy
    "supervised-avg-aug0.5": {"method": "supervised", **BOUND_AVG, "augment_probability": 0.5, **UNIFORM},
    "supervised-avg-aug0.5-known-prior-weighted": {"method": "supervised", **BOUND_AVG, "augment_probability": 0.5, **KNOWN_WEIGHTED},
}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cli.main import app; app()", *args]


def run_one(command: list[str], log: Path, seconds: float | None, threads: int) -> int:
    env = {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    with open(log, "w") as handle:
        try:
            return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, timeout=seconds,
                                  env={**os.environ, **env}).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            return -1  # cut at the time limit; metrics.csv holds the finished epochs


def summarise(run_dir: Path, warmup_epochs: float) -> dict | None:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return None
    accuracy = [float(row["val_accuracy"]) for row in csv.DictReader(open(path, newline=""))]
    if not accuracy:
        return None
    after = accuracy[int(warmup_epochs):] or accuracy
    changes = [abs(b - a) for a, b in zip(accuracy, accuracy[1:])] or [0.0]
    best = max(accuracy)
    return {"run": run_dir.name, "epochs": len(accuracy), "best": best, "best_epoch": accuracy.index(best) + 1,
            "final": accuracy[-1], "after_warmup_mean": statistics.mean(after), "after_warmup_sd": statistics.pstdev(after),
            "mean_abs_change": statistics.mean(changes), "curve": accuracy}  # fmt: skip


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(ROOT))
    from pyro_adgm.plots import save_figure

    labels = sorted({int(r["run"].split("-")[0][1:]) for r in rows})
    settings = list(dict.fromkeys(r["run"].split("-", 1)[1] for r in rows))  # one colour per setting in every panel
    fig, axes = plt.subplots(1, len(labels), figsize=(4.5 * len(labels), 3.6), squeeze=False, sharey=True)
    for ax, n in zip(axes[0], labels):
        for row in rows:
            if int(row["run"].split("-")[0][1:]) == n:
                setting = row["run"].split("-", 1)[1]
                ax.plot(range(1, len(row["curve"]) + 1), row["curve"], label=setting, color=f"C{settings.index(setting)}")
        ax.set(title=f"{n} labels per class", xlabel="epoch")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("validation accuracy")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ, help="a MedMNIST .npz, prepared once into --out")
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--warmup-epochs", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=None, help="cut each run after this many seconds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seeds the label draw and the training of every run")
    parser.add_argument("--augment-probability", type=float, default=None,
                        help="for every run whose setting does not fix it (runs made before the setting existed: 1)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    parser.add_argument("--out", type=Path, default=Path("runs/stability"))
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="demo phantoms, 2 epochs, 3 labels per class, 2 settings, 2 at a time")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        data_options, args.labels, args.epochs, args.warmup_epochs = {"demo": {"n_images": 90, "image_size": 28}}, [3], 2, 1
        args.settings, args.jobs = ["bound-raw", "bound-avg"], max(args.jobs, 2)  # the two runs side by side
    else:
        prepared = args.out / "prepared"
        if not (prepared / "meta.json").exists() and not args.summarise_only:
            if not args.npz.exists():
                parser.error(f"{args.npz}: MedMNIST file not found (see ../shared/data/README.md)")
            subprocess.run(cli("prepare", "medmnist", str(args.npz), "--out", str(prepared)), cwd=ROOT, check=True)
        data_options = {"data": str(prepared)}
    names = [f"l{n}-{setting}" for n in args.labels for setting in args.settings]
    augment = {} if args.augment_probability is None else {"augment_probability": args.augment_probability}
    if not args.summarise_only:
        for name in names:
            settings = {**data_options, **augment, **SETTINGS[name.split("-", 1)[1]]}
            (args.out / f"{name}.json").write_text(json.dumps(settings, indent=2) + "\n")
        commands = [cli("train", "--config", str(args.out / f"{name}.json"), "--task", "2class", "--labels", name.split("-")[0][1:],
                        "--epochs", str(args.epochs), "--warmup-epochs", f"{args.warmup_epochs:g}", "--device", args.device,
                        "--seed", str(args.seed), "--out", str(args.out / name)) for name in names]  # fmt: skip
        start = time.perf_counter()
        with ThreadPoolExecutor(args.jobs) as pool:
            codes = list(pool.map(lambda c: run_one(c[1], args.out / f"{c[0]}.log", args.seconds, args.threads), zip(names, commands)))
        print(f"{len(names)} runs in {time.perf_counter() - start:.0f} s; exit codes {codes} (-1: cut at --seconds)")
    rows = [row for name in names if (row := summarise(args.out / name, args.warmup_epochs)) is not None]
    # runs cut by --seconds finish different numbers of epochs, and accuracy can drift: compare the mean after
    # the warm-up over the epochs that every run finished
    common = min((r["epochs"] for r in rows), default=0)
    for row in rows:
        after = row["curve"][int(args.warmup_epochs) : common] or row["curve"][:common]
        row["after_warmup_mean"], row["after_warmup_sd"] = statistics.mean(after), statistics.pstdev(after)
    first = min(int(args.warmup_epochs) + 1, common)
    columns = ["run", "epochs", "best", "best_epoch", "final", "after_warmup_mean", "after_warmup_sd", "mean_abs_change"]
    with open(args.out / "stability.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns + ["curve"])
        writer.writeheader()
        writer.writerows({**r, "curve": " ".join(f"{a:.4f}" for a in r["curve"])} for r in rows)
    lines = ["`" + " ".join(shlex.quote(a) for a in ["python", "benchmarks/stability.py", *(argv if argv is not None else sys.argv[1:])]) + "`", "",
             f"| run | epochs | best (epoch) | final | mean of epochs {first}-{common} ± sd | mean abs. change per epoch |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['run']} | {r['epochs']} | {r['best']:.3f} ({r['best_epoch']}) | {r['final']:.3f} | "
              f"{r['after_warmup_mean']:.3f} ± {r['after_warmup_sd']:.3f} | {r['mean_abs_change']:.4f} |" for r in rows]  # fmt: skip
    (args.out / "stability.md").write_text("\n".join(lines) + "\n")
    if rows:
        plot(rows, args.out / "stability.png")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
