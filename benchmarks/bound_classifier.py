"""Does the bound classify? What the unlabelled term teaches q(y|a,x), measured on trained ADGMs.

For an unlabelled image the ADGM's objective is E_q(y|a,x)[ELBO(x, y)] + H(q(y|a,x)), whose best q(y|a,x) is
the model's own posterior softmax_y ELBO(x, y) (the bound includes log p(y)). So the unlabelled images pull
the classifier towards the class whose bound is highest: when that class is the true one more often than
q(y|a,x) is right, the unlabelled term has accuracy to give; when it is right less often, it can only take
accuracy away. For every checkpoint (``best.pt`` chosen on ``val`` and ``last.pt``) of the run folders given,
on ``val``: the accuracy of q(y|a,x), the accuracy of argmax_y ELBO(x, y) (:func:`pyro_adgm.evaluation.class_bounds`,
4 draws of a and z), how often the two agree, the median gap in nats between a row's two highest bounds, and
the ROC AUC of each as a ranking (:func:`margin_auc`), which does not depend on where the bound puts the
boundary between the classes. The bound is also split by where its dependence on y comes from
(:func:`pyro_adgm.evaluation.class_bound_terms`): log p(x|z,y) (``pixels``), log p(a|z,y,x) - log q(a|x)
(``aux``) and log p(z) - log q(z|a,y,x) (``latent``), each with its own ROC AUC and its median share, in nats,
of the gap between the bound's two best classes.

With ``--split unlabelled`` the same is measured on the training images each run drew no label for, against
their hidden labels (the images the unlabelled term trains on). The unlabelled term fits p(x|z,y) to each of
them under the classes q(y|a,x) gives it, so where the bound agrees with q and separates the classes by more
nats on these images than on ``val``, the decoder has learned q's own answers for the images it was fitted to,
not a class signal that carries over to new images.

Run folders as ``label_weight.py`` writes them (``OUT/DATA/SETTING/adgm-Nlabels-seedS``): the data and setting
are read from the path. Writes ``OUT/bound_classifier.csv`` (one row per checkpoint; finished rows are kept and
not measured again) and ``OUT/bound_classifier.md`` (mean ± sd over seeds).

    OMP_NUM_THREADS=1 python benchmarks/bound_classifier.py runs/label-weight/*/*/adgm-* --out benchmarks/results
    OMP_NUM_THREADS=1 python benchmarks/bound_classifier.py runs/label-weight/*/*/adgm-* --split unlabelled --out benchmarks/results
    python benchmarks/bound_classifier.py --quick --out /tmp/bound-classifier    # a 1-epoch demo run; a test runs it
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from pyro_adgm import runs
from pyro_adgm.checkpoint import atomic_write_text
from pyro_adgm.evaluation import class_bound_terms, predict_proba
from pyro_adgm.label_curve import mean_sd, write_rows

COLUMNS = ("data", "setting", "labels_per_class", "seed", "split", "checkpoint", "epoch", "images", "q_accuracy",
           "bound_accuracy", "agreement", "median_gap_nats", "bound_majority_share", "q_auc", "bound_auc", "pixels_auc", "aux_auc", "latent_auc", "pixels_gap_nats", "aux_gap_nats",
           "latent_gap_nats", "run_dir")  # fmt: skip
SAMPLES = 4
#: the bound's terms whose ranking and share of the gap are reported (:func:`pyro_adgm.evaluation.class_bound_terms`)
TERMS = ("pixels", "aux", "latent")


def margin_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of log scores (N, K) (log q(y|a,x), or ELBO(x, y) in nats): for each class k, the AUC of the
    margin s_k - logsumexp_{j != k} s_j at telling class k from the rest, averaged over the classes (for K = 2
    the AUC of s_1 - s_0). Margins rather than softmax probabilities, which saturate to ties at the bound's
    gaps of tens of nats. Classes absent from ``labels`` (or the only one present) are left out; NaN if all are."""
    aucs = []
    for k in range(scores.shape[1]):
        if 0 < (labels == k).sum() < len(labels):
            aucs.append(roc_auc_score(labels == k, scores[:, k] - np.logaddexp.reduce(np.delete(scores, k, axis=1), axis=1)))
    return float(np.mean(aucs)) if aucs else float("nan")


def measure(checkpoint: Path, data: str, setting: str, split: str = "val") -> dict:
    """One row: q(y|a,x) against argmax_y ELBO(x, y) on a split of the checkpoint's data (``val``, or
    ``unlabelled``: the training images the run drew no label for, against their hidden labels)."""
    model, state = runs.load_model(checkpoint, "cpu")
    images, labels, _, _ = runs.checkpoint_split(state, split, model.image_size)
    probs = predict_proba(model, images)
    q = probs.argmax(1)
    terms = class_bound_terms(model, images, samples=SAMPLES, seed=0)
    bounds = sum(terms.values())
    order = np.argsort(bounds, 1)
    by_bound, second, rows = order[:, -1], order[:, -2], np.arange(len(labels))  # the two best classes of each image
    config = state["train_config"]
    return {"data": data, "setting": setting, "labels_per_class": config["labels_per_class"], "seed": config["seed"],
            "split": split, "checkpoint": checkpoint.stem, "epoch": state.get("epoch"), "images": len(labels),
            "q_accuracy": round(float((q == labels).mean()), 4), "bound_accuracy": round(float((by_bound == labels).mean()), 4),
            "agreement": round(float((q == by_bound).mean()), 4),
            "median_gap_nats": round(float(np.median(bounds[rows, by_bound] - bounds[rows, second])), 2),
            "bound_majority_share": round(float(np.bincount(by_bound, minlength=model.num_classes).max() / len(labels)), 4),
            "q_auc": round(margin_auc(np.log(np.clip(probs, 1e-30, None)), labels), 4), "bound_auc": round(margin_auc(bounds, labels), 4),
            **{f"{t}_auc": round(margin_auc(terms[t], labels), 4) for t in TERMS},
            **{f"{t}_gap_nats": round(float(np.median(terms[t][rows, by_bound] - terms[t][rows, second])), 2) for t in TERMS},
            "run_dir": str(checkpoint.parent)}  # fmt: skip


def split_of(row: dict) -> str:
    """The split a row was measured on (rows written before the split column are ``val``'s)."""
    return row.get("split") or "val"


def cell(members: list[dict], field: str, scale: float = 1.0, digits: int = 3, signed: bool = False) -> str:
    """Mean ± sd of a field over the runs of a row of the table."""
    mean, sd, _ = mean_sd([float(m[field]) * scale if m.get(field) not in (None, "") else None for m in members])
    if mean is None:
        return "-"  # rows without this column
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if sd is None else f"{text} ± {sd:.{digits}f}"


def summary_markdown(rows: list[dict], command: str) -> str:
    """The table of ``rows``, one line per data, setting, labels and checkpoint, under ``command`` (markdown)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["data"], row["setting"], int(row["labels_per_class"]), split_of(row), row["checkpoint"])
        groups.setdefault(key, []).append(row)
    lines = [command, "", "| data | setting | labels/class | split | checkpoint | runs | q(y\\|a,x) accuracy | "
             "argmax_y ELBO accuracy | bound − q (points) | agreement | median gap (nats) | q ROC AUC | bound ROC AUC | "
             "ROC AUC: pixels, aux, latent | gap: pixels, aux, latent (nats) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (data, setting, labels, split, checkpoint), members in sorted(groups.items()):
        members = [{**m, "gain": float(m["bound_accuracy"]) - float(m["q_accuracy"])} for m in members]

        lines.append(f"| {data} | {setting} | {labels} | {split} | {checkpoint} | {len(members)} | {cell(members, 'q_accuracy')} | "
                     f"{cell(members, 'bound_accuracy')} | {cell(members, 'gain', 100, 1, True)} | {cell(members, 'agreement')} | {cell(members, 'median_gap_nats', digits=1)} | "
                     f"{cell(members, 'q_auc')} | {cell(members, 'bound_auc')} | "
                     f"{', '.join(cell(members, t + '_auc') for t in TERMS)} | {', '.join(cell(members, t + '_gap_nats', digits=1) for t in TERMS)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def quick_run(out: Path) -> Path:
    """A 1-epoch ADGM on the tiny demo phantoms, in ``out/demo/defaults/adgm-3labels-seed0``."""
    from pyro_adgm.training import TrainConfig

    config = TrainConfig(task="2class", labels_per_class=3, epochs=1, batch_size=16, device="cpu")
    run_dir = out / "demo" / "defaults" / "adgm-3labels-seed0"
    runs.train(config, demo={"n_images": 150, "image_size": 28, "seed": 0}, run_dir=run_dir,
               model_options={"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)})  # fmt: skip
    return run_dir


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="*", help="ADGM run folders OUT/DATA/SETTING/RUN")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--split", choices=("val", runs.UNLABELLED), default="val",
                        help="val, or unlabelled: each run's training images without labels, against their hidden labels")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    run_dirs = list(args.run_dirs)
    if args.quick:
        run_dirs = [quick_run(Path(tempfile.mkdtemp(dir=args.out)))]
    if not run_dirs:
        parser.error("give run folders (or --quick)")
    table = args.out / "bound_classifier.csv"
    rows = [{**r, "split": split_of(r)} for r in csv.DictReader(table.open(newline=""))] if table.exists() else []
    done = {(r["run_dir"], split_of(r), r["checkpoint"]) for r in rows if r.get("pixels_auc")}  # rows without the terms are measured again
    for run_dir in run_dirs:  # every folder is checked before any is measured
        config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else None
        if config is None or config.get("train", config).get("method") != "adgm":
            parser.error(f"{run_dir}: not an ADGM run folder (its config.json is missing or names another method)")
    for run_dir in run_dirs:
        for checkpoint in (run_dir / "best.pt", run_dir / "last.pt"):
            key = (str(run_dir), args.split, checkpoint.stem)
            if key in done or not checkpoint.exists():
                continue
            rows = [r for r in rows if (r["run_dir"], split_of(r), r["checkpoint"]) != key]
            rows.append(measure(checkpoint, run_dir.parent.parent.name, run_dir.parent.name, args.split))
            print(json.dumps(rows[-1]), flush=True)
            write_rows(rows, table, COLUMNS)
    write_rows(rows, table, COLUMNS)
    shown = "--quick" if args.quick else " ".join(map(str, run_dirs)) if len(run_dirs) <= 3 else "RUN_DIR..."
    split = "" if args.split == "val" else f" --split {args.split}"
    command = f"`python benchmarks/bound_classifier.py {shown}{split} --out {args.out}`"
    if shown == "RUN_DIR...":
        command += f" on {len(run_dirs)} run folders (the csv's run_dir column)"
    atomic_write_text(args.out / "bound_classifier.md", summary_markdown(rows, command))
    print((args.out / "bound_classifier.md").read_text())
    return rows


if __name__ == "__main__":
    main()
