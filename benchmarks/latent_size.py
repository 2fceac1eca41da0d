"""The size of z against what the bound knows of the classes, on the real RSNA images.

With a 64-dimensional z (the default), q(z|a,y,x) can put into z whatever of an image y does not explain, and
p(x|z,y) can reconstruct an image from z with little help from y; the bound then separates the classes only as
well as the labels taught it (BENCHMARKS.md, "What the unlabelled term can teach"). A smaller z leaves more of
the image for y to explain. This script trains the ADGM with the defaults and ``z_dim`` set to each of
``--z-dims`` on ``label_weight.py``'s RSNA protocol (the 1,500 real RSNA images at 64x64, 2class and 3class,
25 and 100 labels per class, 12 epochs, warm-up 8, selection on ``val``, ``test`` read once per run), into
``OUT/DATA/z-SIZE/adgm-Nlabels-seedS``, the layout that ``bound_classifier.py`` reads. The default z (64) is
``label_weight.py``'s ``batch-means`` setting. Resumable: finished runs are read back; each finished run's row is
merged into ``--rows`` (by default ``OUT/latent_size.csv``), whose runs are not trained again.
``--summarise-only`` writes ``OUT/latent_size.md`` from the committed rows: each size's runs (z = 64 from
``--default-rows``, ``label_weight.py``'s batch-means runs), the test gain over the supervised baseline of the
same seed (``rsna_1500.csv``) and the last checkpoint's bound against q(y|a,x) (``bound_classifier.csv``).

    OMP_NUM_THREADS=1 python benchmarks/latent_size.py --data rsna-2class --z-dims 16 --seeds 0 1 2 --out runs/label-weight
    OMP_NUM_THREADS=1 python benchmarks/bound_classifier.py runs/label-weight/rsna-*/*/adgm-* --out benchmarks/results
    python benchmarks/latent_size.py --summarise-only --out benchmarks/results
    python benchmarks/latent_size.py --quick --out /tmp/latent-size     # demo phantoms, 1 epoch; a test runs it
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from label_weight import COLUMNS, DATA, KEY, SETTINGS, folder_row  # noqa: E402
from rsna_1500 import DEFAULT_SOURCE, prepared  # noqa: E402

from pyro_adgm.checkpoint import atomic_write_text  # noqa: E402
from pyro_adgm.label_curve import mean_sd, merge_row, paired_differences, read_rows, row_key, run_dir_name, run_label_curve  # noqa: E402

RSNA = ("rsna-2class", "rsna-3class")
RESULTS = ROOT / "results"
DEFAULT_Z = 64


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def summary_markdown(results: Path, default_rows: Path) -> str:
    """The table of every size's runs on RSNA-1500: accuracies, the paired test gain over the baseline (points)
    and, at the last checkpoint on ``val``, the bound against q(y|a,x) (``bound_classifier.csv``)."""
    def cell(values, scale=1.0, signed=False):
        mean, sd, _ = mean_sd([None if v in (None, "") else scale * float(v) for v in values])
        if mean is None:
            return "-"
        digits = 1 if signed else 3
        return (f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}") + (f" ± {sd:.{digits}f}" if sd is not None else "")

    rows = [{**r, "setting": f"z-{DEFAULT_Z}"} for r in read_csv(default_rows) if r["setting"] == "batch-means"]
    rows += read_csv(results / "latent_size.csv")
    rows += [{**r, "data": f"rsna-{r['task']}", "setting": "supervised"} for r in read_csv(results / "rsna_1500.csv")
             if r["method"] == "supervised"]  # fmt: skip
    bounds = {}
    for r in read_csv(results / "bound_classifier.csv"):
        on_val = (r.get("split") or "val") == "val"  # the rows of --split unlabelled measure other images
        if on_val and r["checkpoint"] == "last" and r["data"] in RSNA and r["setting"] in ("batch-means", *{x["setting"] for x in rows}):
            setting = f"z-{DEFAULT_Z}" if r["setting"] == "batch-means" else r["setting"]
            bounds.setdefault((r["data"], setting, int(r["labels_per_class"])), []).append(r)
    sizes = sorted({r["setting"] for r in rows if r["setting"] != "supervised"}, key=lambda s: -int(s[2:]))
    lines = ["| data | labels/class | z | runs | val accuracy | val, last epoch | test accuracy | − supervised, test (points) | "
             "test ROC AUC | bound − q, val (points) | ROC AUC: q(y\\|a,x) | ROC AUC: bound | ROC AUC: pixels | median gap (nats) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for data in RSNA:
        for n in sorted({int(r["labels_per_class"]) for r in rows if r["data"] == data}):
            for setting in sizes:
                group = [r for r in rows if (r["data"], r["setting"], int(r["labels_per_class"])) == (data, setting, n)]
                if not group:
                    continue
                gain = paired_differences([r for r in rows if r["data"] == data and int(r["labels_per_class"]) == n], setting,
                                          "supervised", column="setting", metrics=("test_accuracy",))  # fmt: skip
                measured = bounds.get((data, setting, n), [])
                gaps = [float(b["median_gap_nats"]) for b in measured]
                lines.append(" | ".join([
                    f"| RSNA-1500 {data[5:]}", str(n), setting[2:], str(len(group)),
                    *(cell([r[c] for r in group]) for c in ("val_accuracy", "final_val_accuracy", "test_accuracy")),
                    f"{gain[0]['test_accuracy_mean'] * 100:+.1f} ± {gain[0]['test_accuracy_sd'] * 100:.1f}" if gain else "-",
                    cell([r["test_roc_auc"] for r in group]),
                    cell([float(b["bound_accuracy"]) - float(b["q_accuracy"]) for b in measured], 100, signed=True),
                    *(cell([b[c] for b in measured]) for c in ("q_auc", "bound_auc", "pixels_auc")),
                    f"{statistics.median(gaps):.1f} |" if gaps else "- |"]))  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(RSNA), choices=list(RSNA))
    parser.add_argument("--z-dims", type=int, nargs="+", default=[16])
    parser.add_argument("--labels", type=int, nargs="+", help="labels per class (default: 25 and 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--warmup-epochs", type=float, default=8.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/label-weight"))
    parser.add_argument("--rows", type=Path, default=None, metavar="CSV", help="finished rows (default: OUT/latent_size.csv)")
    parser.add_argument("--quick", action="store_true", help="demo phantoms (28x28, 150 images), 1 epoch, 3 labels")
    parser.add_argument("--summarise-only", action="store_true", help="write OUT/latent_size.md from --results")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of latent_size.csv, rsna_1500.csv, bound_classifier.csv")
    parser.add_argument("--default-rows", type=Path, default=RESULTS / "label_weight_rerun_e977935.csv",
                        help=f"label_weight.py rows whose batch-means runs stand for z = {DEFAULT_Z}")
    args = parser.parse_args(argv)
    if args.summarise_only:
        table = summary_markdown(args.results, args.default_rows)
        atomic_write_text(args.out / "latent_size.md", table)
        print(table)
        return read_rows(args.results / "latent_size.csv", KEY)
    if any(z < 1 for z in args.z_dims):
        parser.error(f"--z-dims: expected sizes of at least 1, got {args.z_dims}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows_csv = args.rows or args.out / "latent_size.csv"
    recorded = {row_key(r, KEY) for r in read_rows(rows_csv, KEY)}
    overrides = {"warmup_epochs": args.warmup_epochs, "device": args.device, **SETTINGS["batch-means"]}
    sizes, demo, data = {}, None, None
    names = ["quick"] if args.quick else args.data
    if args.quick:
        args.epochs, args.seeds, args.labels = 1, [0], [3]
        demo, sizes = {"n_images": 150, "image_size": 28, "seed": 0}, {"a_dim": 8, "channels": (8, 16), "hidden": (32,)}
    elif not (DEFAULT_SOURCE / "labels.csv").is_file():
        parser.error(f"{DEFAULT_SOURCE}: not the rsna-1500 folder (no labels.csv; see ../shared/data/README.md)")
    else:
        data = prepared(DEFAULT_SOURCE, args.out / "rsna", 64)
    for name in names:
        task, counts = ("2class", (3,)) if args.quick else DATA[name]
        for seed in args.seeds:
            for n in args.labels or counts:
                for z_dim in args.z_dims:
                    setting = f"z-{z_dim}"
                    run_dir = args.out / name / setting / run_dir_name("adgm", n, seed)
                    if (name, setting, n, seed) in recorded and not (run_dir / "report.json").exists():
                        logging.info("%s: its row is in %s, not trained again", run_dir, rows_csv)
                        continue
                    run_label_curve([n], [seed], ["adgm"], data=data, demo=demo, task=task, epochs=args.epochs,
                                    out_dir=args.out / name / setting, config_overrides=overrides,
                                    model_options={**sizes, "z_dim": z_dim})  # fmt: skip
                    merge_row(folder_row(run_dir), rows_csv, KEY, COLUMNS)
    return read_rows(rows_csv, KEY)


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
