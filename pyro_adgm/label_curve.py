"""Accuracy against the number of labels: the protocol of Figs. 5 and 6 of Cerri & Fraccaro.

One training run per (method, labels per class, seed) on a prepared dataset (or the demo phantoms), each in its
own run directory under ``out_dir``; the best-validation checkpoint of each run is evaluated once on the test
split. :func:`run_label_curve` is resumable: a run whose ``report.json`` exists is not trained again (whatever
``epochs`` says now), a run that stopped half-way is continued from its ``last.pt``, and a test evaluation
already written is read back. With ``rows_csv`` (a results file kept in the repository) a sweep also goes on
on a machine that has none of the run folders: the runs that file holds are not trained again.
:func:`summarise` gives mean and standard deviation over seeds, :func:`plot_label_curve` the figure.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_tools.errors import InputError
from pyro_adgm import runs
from pyro_adgm.checkpoint import atomic_write_text
from pyro_adgm.model import ADGM
from pyro_adgm.plots import save_figure
from pyro_adgm.training import TrainConfig

logger = logging.getLogger(__name__)

ROW_COLUMNS = ("method", "labels_per_class", "seed", "val_accuracy", "final_val_accuracy", "test_accuracy", "test_roc_auc",
               "seconds", "run_dir")  # fmt: skip


def run_dir_name(method: str, labels_per_class: int, seed: int) -> str:
    return f"{method}-{labels_per_class}labels-seed{seed}"


def has_split(data: str | Path | None, demo: dict | None, task: str, split: str) -> bool:
    dataset = runs.open_dataset(data, demo)
    labels, _ = dataset.task_labels(task)
    return len(runs.split_rows(dataset, labels, split)) > 0


def run_label_curve(labels_per_class: Sequence[int], seeds: Sequence[int], methods: Sequence[str] = ("adgm", "supervised"), *,
                    data: str | Path | None = None, demo: dict | None = None, task: str = "2class",
                    epochs: int | None = None, out_dir: str | Path = "runs/label-curve",
                    evaluate_split: str | None = "test", image_size: int | None = None,
                    model_options: dict | None = None, config_overrides: dict | None = None,
                    class_prior: str | None = None, label_weights: str = "equal",
                    rows_csv: str | Path | None = None) -> list[dict]:  # fmt: skip
    """Train and evaluate every (method, labels per class, seed); return one row per run.

    data: a prepared dataset folder, or None for the demo phantoms (``demo`` settings as :func:`runs.train`).
    epochs: per run (None: the paper's number for ``task``). config_overrides: other :class:`TrainConfig`
    fields (``batch_size``, ``lr``, ``device``, ...). model_options: keyword arguments of :class:`ADGM`, over
    the p(y) settings that ``class_prior`` and ``label_weights`` give each method (:func:`runs.model_options_for`:
    by default the paper's fixed uniform p(y) and unweighted labels for both).
    evaluate_split: the split the best checkpoint is evaluated on once (skipped, with a warning, where the
    dataset has no such split), or None.
    rows_csv: a CSV of finished rows (:data:`ROW_COLUMNS`, as this function writes them): a (method, labels per
    class, seed) it holds is taken from it, not trained, where its run folder has no ``report.json``; each new
    row is merged into it as its run finishes (:func:`merge_row`: under a lock, so that sweeps of other seeds
    may write the same file side by side).

    Rows (also written to ``out_dir/label_curve.csv``): method, labels_per_class, seed, val_accuracy (of the
    best checkpoint), final_val_accuracy (of the last epoch: how much of it the run held), test_accuracy and
    test_roc_auc (on ``evaluate_split``; None when not evaluated), seconds (training time: the sum of the epochs'
    seconds in ``metrics.csv``) and run_dir.
    """
    out_dir = Path(out_dir)
    evaluate_split = evaluate_split if evaluate_split and has_split(data, demo, task, evaluate_split) else None
    if evaluate_split is None:
        logger.warning("label curve: no test evaluation (no split asked for, or the dataset has none)")
    rows = []
    recorded = {row_key(row): row for row in read_rows(rows_csv)} if rows_csv is not None else {}
    for method in methods:
        for n in labels_per_class:
            for seed in seeds:
                run_dir = out_dir / run_dir_name(method, n, seed)
                if (method, n, seed) in recorded and not (run_dir / "report.json").exists():
                    logger.info("%s: its row is in %s, not trained again", run_dir, rows_csv)
                    rows.append(recorded[(method, n, seed)])
                    continue
                config = TrainConfig(task=task, labels_per_class=n, epochs=epochs, seed=seed, method=method,
                                     **(config_overrides or {}))
                options = {**runs.model_options_for(method, class_prior, label_weights), **(model_options or {})}
                rows.append(one_run(config, run_dir, data=data, demo=demo, image_size=image_size,
                                    model_options=options, evaluate_split=evaluate_split))  # fmt: skip
                write_rows(rows, out_dir / "label_curve.csv")
                if rows_csv is not None:
                    merge_row(rows[-1], rows_csv)
    return rows


#: the columns that name a run of :func:`run_label_curve`'s rows (a results file holds one row per such key)
ROW_KEY = ("method", "labels_per_class", "seed")
#: columns of results files that hold text (an unlabelled weight may be a word); every other column holds
#: numbers (or is empty)
TEXT_COLUMNS = ("method", "run_dir", "data", "setting", "task", "unlabelled_weight")


def row_key(row: dict, key: Sequence[str] = ROW_KEY) -> tuple:
    return tuple(int(row[k]) if k in ("labels_per_class", "seed") else row[k] for k in key)


def read_rows(path: str | Path, key: Sequence[str] = ROW_KEY) -> list[dict]:
    """The rows of a CSV that :func:`write_rows` wrote (labels_per_class and seed as int, the numbers of the
    columns not in :data:`TEXT_COLUMNS` as float, empty cells as None); [] where the file does not exist.
    :class:`InputError` naming the line where a ``key`` column is empty or a number is not one."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    parsed = []
    for line, row in enumerate(rows, start=2):
        missing = [c for c in key if not row.get(c)]
        if missing:
            raise InputError(f"{path}, line {line}: no {missing[0]}; expected a row with {', '.join(key)}")
        try:
            parsed.append({k: v if k in TEXT_COLUMNS else None if v in ("", None) else
                           int(v) if k in ("labels_per_class", "seed") else float(v) for k, v in row.items()})  # fmt: skip
        except ValueError as error:
            raise InputError(f"{path}, line {line}: {error}; expected numbers in every column but {', '.join(TEXT_COLUMNS)}") from None
    return parsed


def merge_row(row: dict, path: str | Path, key: Sequence[str] = ROW_KEY, columns: Sequence[str] = ROW_COLUMNS) -> None:
    """Put ``row`` into the CSV at ``path`` (replacing the row with the same ``key`` columns, else appended),
    read and written again under an exclusive lock on ``path.lock`` and written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # no POSIX locks (Windows): one writer at a time is then the caller's to ensure
            pass
        table = {row_key(r, key): r for r in read_rows(path, key)}
        table[row_key(row, key)] = row
        write_rows(list(table.values()), path, columns)


def one_run(config: TrainConfig, run_dir: Path, *, data, demo, image_size, model_options, evaluate_split) -> dict:
    """Train (or continue, or skip) one run and evaluate it; the row of :func:`run_label_curve`."""
    saved_config = run_dir / "config.json"
    if saved_config.exists():  # a finished or stopped run is reused only if it is the model asked for
        saved = json.loads(saved_config.read_text())
        check_same_model(saved, model_options, run_dir)
        check_same_training(saved, config, run_dir)
    if (run_dir / "report.json").exists():
        if not json.loads((run_dir / "report.json").read_text()).get("complete", True):
            logger.warning("%s: stopped by its time limit before its last epoch; reported as it is", run_dir)
        logger.info("%s: finished already, not trained again", run_dir)
    elif (run_dir / "last.pt").exists():
        runs.resume(run_dir, epochs=config.resolved_epochs())
    else:
        runs.train(config, data=data, demo=demo, image_size=image_size, run_dir=run_dir, model_options=model_options)
    if evaluate_split is not None and not (run_dir / f"evaluation-{evaluate_split}.json").exists():
        runs.evaluate(run_dir / "best.pt", data=data, split=evaluate_split, device=config.device)  # saved beside it
    return finished_row(run_dir, evaluate_split)


def finished_row(run_dir: Path, evaluate_split: str | None = "test") -> dict:
    """The row of :func:`run_label_curve` for a finished run, read from its folder (``config.json``,
    ``report.json``, ``metrics.csv`` and, when evaluated, ``evaluation-SPLIT.json``)."""
    run_dir = Path(run_dir)
    train = json.loads((run_dir / "config.json").read_text())["train"]
    report = json.loads((run_dir / "report.json").read_text())
    saved = run_dir / f"evaluation-{evaluate_split}.json"
    test = json.loads(saved.read_text()) if evaluate_split is not None and saved.exists() else None
    with open(run_dir / "metrics.csv", newline="") as handle:
        epochs = list(csv.DictReader(handle))
    return {
        "method": train["method"], "labels_per_class": train["labels_per_class"], "seed": train["seed"],
        "val_accuracy": report["accuracy"], "final_val_accuracy": float(epochs[-1]["val_accuracy"]),
        "test_accuracy": test["accuracy"] if test else None, "test_roc_auc": test["roc_auc"] if test else None, "seconds": round(sum(float(e["seconds"]) for e in epochs), 1),
        "run_dir": str(run_dir),
    }  # fmt: skip


#: model settings a reused run must share with the ones asked for; a config saved before a field existed gets the
#: value such a run loads with (the ADGM, a Gaussian p(x|z,y) with per-class batch norm, a fixed p(y), unweighted labels)
COMPARED_MODEL_FIELDS = {"likelihood": "gaussian", "decoder_norm": "batch", "learn_class_prior": False,
                         "prior_weighted_labels": False, "class_prior": None}  # fmt: skip
#: fields of the generative model, which the supervised baseline does not train
GENERATIVE_FIELDS = ("likelihood", "decoder_norm")


def check_same_model(saved: dict, model_options: dict, run_dir: Path) -> None:
    """Refuse (InputError) to reuse the run in ``run_dir``, whose ``config.json`` is ``saved``, when its model
    differs from ``model_options`` in the likelihood or the p(y) settings, or is a retired variant (the SDGM): it
    would be reported as the new one.
    (Under a fixed uniform p(y) weighting the labels by K * p(y) changes nothing, so that flag is not compared.)"""
    have = {**COMPARED_MODEL_FIELDS, **saved["model"]}
    if have.pop("variant", "adgm") != "adgm":
        raise InputError(f"{run_dir}: holds a run of the retired {saved['model']['variant']!r} variant, not the ADGM asked for; "
                         "choose another output folder")  # fmt: skip
    defaults = inspect.signature(ADGM).parameters  # what a model built from model_options gets
    want = {**{field: defaults[field].default for field in COMPARED_MODEL_FIELDS}, **model_options}
    if isinstance(want["class_prior"], dict):  # known shares by name -> the order of the run's classes
        want["class_prior"] = runs.resolve_known_prior(want["class_prior"], saved["class_names"])
    for settings in (have, want):
        prior = settings["class_prior"]
        if prior is not None and np.allclose(prior, 1.0 / len(prior), atol=1e-6):
            settings["class_prior"] = None  # the uniform p(y), given or by default
    uniform = all(not s["learn_class_prior"] and s["class_prior"] is None for s in (have, want))
    supervised = saved.get("train", {}).get("method") == "supervised"
    for field in COMPARED_MODEL_FIELDS:
        if (field == "prior_weighted_labels" and uniform) or (field in GENERATIVE_FIELDS and supervised):
            continue
        if not same_setting(have[field], want[field]):
            shown = {k: "uniform" if v is None else v for k, v in (("have", have[field]), ("want", want[field]))}
            raise InputError(f"{run_dir}: holds a run with model {field} = {shown['have']}, not the {shown['want']} "
                             "asked for; choose another output folder")  # fmt: skip


#: training settings a reused run must share with the ones asked for (with the value of a config saved before the
#: field existed), and the methods they change: the supervised baseline has no unlabelled term
COMPARED_TRAIN_FIELDS = {"beta": (1.0, ("adgm", "supervised")), "unlabelled_weight": (1.0, ("adgm",)),
                         "decoupled_weight_decay": (False, ("adgm", "supervised"))}


def check_same_training(saved: dict, config: TrainConfig, run_dir: Path) -> None:
    """Refuse (InputError) to reuse the run in ``run_dir`` (``config.json`` = ``saved``) when it was trained
    with another β or (ADGM) another final unlabelled weight than ``config``: it would be reported as the new one."""
    for field, (default, methods) in COMPARED_TRAIN_FIELDS.items():
        have, want = saved.get("train", {}).get(field, default), getattr(config, field)
        if config.method in methods and not same_setting(have, want):
            raise InputError(f"{run_dir}: holds a run trained with {field} = {shown(have)}, not the {shown(want)} asked for; "
                             "choose another output folder")  # fmt: skip


def shown(value) -> str:
    return str(value) if isinstance(value, bool | str) else f"{value:g}"


def same_setting(have, want) -> bool:
    if isinstance(have, str) or isinstance(want, str) or have is None or want is None:
        return have == want
    return np.shape(have) == np.shape(want) and bool(np.allclose(have, want, atol=1e-6))  # flags, probabilities


def write_rows(rows: Sequence[dict], path: Path, columns: Sequence[str] = ROW_COLUMNS) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


# summaries


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (None for fewer than two values) of the values that are not None."""
    present = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not present:
        return None, None, 0
    sd = float(np.std(present, ddof=1)) if len(present) > 1 else None
    return float(np.mean(present)), sd, len(present)


#: the metrics :func:`summarise` averages by default: those of :func:`run_label_curve`'s rows
SUMMARY_METRICS = ("val_accuracy", "final_val_accuracy", "test_accuracy", "test_roc_auc")


def summarise(rows: Sequence[dict], *, by: Sequence[str] = ("method", "labels_per_class"),
              metrics: Sequence[str] = SUMMARY_METRICS) -> list[dict]:  # fmt: skip
    """One row per distinct value of the ``by`` columns (labels_per_class as int), in the order first seen: those
    columns, runs, and mean / sd over its rows (the seeds) of each of ``metrics`` (keys ``<metric>_mean``,
    ``<metric>_sd``; None where no row has the metric)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = tuple(int(row[k]) if k == "labels_per_class" else row[k] for k in by)
        groups.setdefault(key, []).append(row)
    summary = []
    for key, members in groups.items():
        entry = {**dict(zip(by, key)), "runs": len(members)}
        for metric in metrics:
            entry[f"{metric}_mean"], entry[f"{metric}_sd"], _ = mean_sd([m.get(metric) for m in members])
        summary.append(entry)
    return summary


def paired_differences(rows: Sequence[dict], treated: str, baseline: str, *, column: str = "method",
                       by: Sequence[str] = ("labels_per_class",), metrics: Sequence[str] = SUMMARY_METRICS) -> list[dict]:  # fmt: skip
    """``treated`` against ``baseline`` (two values of ``column``) on the same seeds: one row per distinct value of
    the ``by`` columns, in the order first seen, with ``column`` = "TREATED - BASELINE", runs (the seeds that both
    have), and mean / sd over those seeds of each metric's difference (keys ``<metric>_mean``, ``<metric>_sd``;
    None where a pair lacks the metric)."""
    def key(row):
        return tuple(int(row[k]) if k == "labels_per_class" else row[k] for k in by)

    base = {(key(r), int(r["seed"])): r for r in rows if r[column] == baseline}
    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for row in rows:
        if row[column] == treated and (key(row), int(row["seed"])) in base:
            groups.setdefault(key(row), []).append((row, base[(key(row), int(row["seed"]))]))
    out = []
    for group, pairs in groups.items():
        entry = {**dict(zip(by, group)), column: f"{treated} - {baseline}", "runs": len(pairs)}
        for metric in metrics:
            differences = [None if t.get(metric) in (None, "") or b.get(metric) in (None, "") else float(t[metric]) - float(b[metric])
                           for t, b in pairs]  # fmt: skip
            entry[f"{metric}_mean"], entry[f"{metric}_sd"], _ = mean_sd(differences)
        out.append(entry)
    return out


def format_summary(summary: Sequence[dict]) -> str:
    """A plain-text table: method, labels per class, runs, accuracy mean ± sd (validation and test)."""

    def cell(mean, sd):
        if mean is None:
            return "-"
        return f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "")

    lines = [f"{'method':<12} {'labels/class':>12} {'runs':>4} {'val acc %':>16} {'test acc %':>16}"]
    for s in summary:
        val, test = cell(s["val_accuracy_mean"], s["val_accuracy_sd"]), cell(s["test_accuracy_mean"], s["test_accuracy_sd"])
        lines.append(f"{s['method']:<12} {s['labels_per_class']:>12} {s['runs']:>4} {val:>16} {test:>16}")
    return "\n".join(lines)


def plot_label_curve(rows: Sequence[dict], path: str | Path, *, metric: str | None = None, title: str = "") -> Path:
    """Accuracy against labels per class (log x), mean ± sd over seeds as error bars, one line per method.

    metric: ``test_accuracy`` where any run has it, else ``val_accuracy``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    if metric is None:
        metric = "test_accuracy" if any(s["test_accuracy_mean"] is not None for s in summary) else "val_accuracy"
    fig, ax = plt.subplots(figsize=(5.5, 4))
    draw_label_curves(ax, summary, metric)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.legend()
    path = Path(path)
    save_figure(fig, path)
    return path


def draw_label_curves(ax, summary: Sequence[dict], metric: str, *, series: Sequence[str] = ("method",), label=None) -> None:
    """On a matplotlib axis: ``metric`` against labels per class (log x), mean ± sd as error bars, one line per
    distinct value of the ``series`` columns of :func:`summarise`'s rows (``label(key)`` names it; default: the
    values joined by a space)."""
    import matplotlib.ticker

    for key in dict.fromkeys(tuple(s[k] for k in series) for s in summary):
        points = sorted((s["labels_per_class"], s[f"{metric}_mean"], s[f"{metric}_sd"] or 0.0) for s in summary
                        if tuple(s[k] for k in series) == key and s[f"{metric}_mean"] is not None)  # fmt: skip
        if points:
            x, mean, sd = zip(*points)
            ax.errorbar(x, mean, yerr=sd, marker="o", capsize=3, label=label(key) if label else " ".join(map(str, key)))
    ax.set_xscale("log")
    counts = sorted({s["labels_per_class"] for s in summary})
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("labelled images per class")
    ax.grid(True, which="both", alpha=0.3)
