"""How much of what the classifiers and the bound rank on RSNA-1500 is the view position (AP or PA)?

RSNA's X-rays are taken PA (the patient standing, back to front) or AP (front to back, mostly bedside films of
patients too ill to stand), and the two look different (the heart magnified, the shoulder blades over the lungs,
other markers). In ``../shared/data/rsna-1500`` (its ``labels.csv`` has each patient's ``ViewPosition``) AP is
far more common among the abnormal images than among the normal ones, so a ranking of the classes can come
from the view alone. For each 2class checkpoint (``best.pt`` and ``last.pt`` of the run folders given, ADGM or
supervised) on ``--split`` (``unlabelled``, the default: the training images each run drew no label for, the
images the ADGM's unlabelled term trains on; or ``val``): the ROC AUC of q(y|a,x)'s margin log q(abnormal) -
log q(normal) at telling abnormal from normal, at telling AP from PA, and at telling abnormal from normal among
the PA images alone and the AP images alone; for the ADGM the same for the bound's margin ELBO(x, abnormal) -
ELBO(x, normal) (:func:`pyro_adgm.evaluation.class_bound_terms`, 4 draws of a and z). An AUC within one view is
what a ranking knows of the class beyond the view.

Writes ``OUT/view_position.csv`` (one row per checkpoint and split; finished rows are kept, not measured again)
and ``OUT/view_position.md`` (mean ± sd over seeds). ``--setting`` names the runs given (a column of the table).

    OMP_NUM_THREADS=1 python benchmarks/view_position.py runs/rsna-1500-48/2class/* --setting 48-epochs --out benchmarks/results
    python benchmarks/view_position.py --quick --out /tmp/view-position    # a 1-epoch run at 16x16; a test runs it
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

from data_tools.errors import InputError
from pyro_adgm import runs
from pyro_adgm.checkpoint import atomic_write_text
from pyro_adgm.evaluation import class_bound_terms, predict_proba
from pyro_adgm.label_curve import mean_sd, write_rows

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "rsna-1500"
SAMPLES = 4
#: the AUCs of each ranking (q's margin, the bound's margin): the class, the view, the class within each view
RANKINGS = ("class", "view", "class_pa", "class_ap")
COLUMNS = ("setting", "method", "labels_per_class", "seed", "split", "checkpoint", "epoch", "images",
           "ap_share_abnormal", "ap_share_normal", *(f"q_{r}_auc" for r in RANKINGS),
           *(f"bound_{r}_auc" for r in RANKINGS), "run_dir")  # fmt: skip


def read_views(source: Path) -> dict[str, str]:
    """Patient id -> ViewPosition (AP or PA) from the rsna-1500 folder's ``labels.csv``."""
    path = source / "labels.csv"
    if not path.is_file():
        raise InputError(f"{source}: not the rsna-1500 folder (no labels.csv; see ../shared/data/README.md)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "ViewPosition" not in rows[0] or "patientId" not in rows[0]:
        raise InputError(f"{path}: expected the columns patientId and ViewPosition")
    return {row["patientId"]: row["ViewPosition"].strip().upper() for row in rows}


def view_aucs(margin: np.ndarray, abnormal: np.ndarray, ap: np.ndarray) -> dict[str, float]:
    """ROC AUCs of a margin (N,) (higher: more abnormal) at telling abnormal (bool (N,)) from normal, AP (bool
    (N,)) from PA, and abnormal from normal among the PA and the AP images alone (NaN where a group has one
    class only)."""

    def auc(target, score):
        return float(roc_auc_score(target, score)) if 0 < target.sum() < len(target) else float("nan")

    return {"class": auc(abnormal, margin), "view": auc(ap, margin),
            "class_pa": auc(abnormal[~ap], margin[~ap]), "class_ap": auc(abnormal[ap], margin[ap])}  # fmt: skip


def measure(checkpoint: Path, views: dict[str, str], setting: str, split: str) -> dict:
    """One row: the AUCs of q's margin (and, for the ADGM, the bound's) on ``split`` of the checkpoint's data."""
    model, state = runs.load_model(checkpoint, "cpu")
    config = state["train_config"]
    if list(state["class_names"]) != ["normal", "abnormal"]:
        raise InputError(f"{checkpoint}: a 2class (normal, abnormal) checkpoint expected, not classes {state['class_names']}")
    images, labels, _, _ = runs.checkpoint_split(state, split, model.image_size)
    dataset = runs.open_dataset(state["data"]["data"])
    labels_of_task, class_names = dataset.task_labels(config["task"])
    ids = dataset.index.patient[runs.checkpoint_split_rows(state, split, dataset, labels_of_task, class_names)]
    missing = [i for i in ids if views.get(i) not in ("AP", "PA")]
    if missing:
        raise InputError(f"{checkpoint}: no AP/PA view in labels.csv for patient {missing[0]} (and {len(missing) - 1} more)")
    ap = np.array([views[i] == "AP" for i in ids])
    abnormal = labels == 1
    probs = predict_proba(model, images)
    q = {f"q_{k}_auc": round(v, 4) for k, v in view_aucs(np.log(np.clip(probs[:, 1], 1e-30, None))
                                                          - np.log(np.clip(probs[:, 0], 1e-30, None)), abnormal, ap).items()}  # fmt: skip
    bound = {f"bound_{r}_auc": None for r in RANKINGS}
    if config["method"] == "adgm":
        bounds = sum(class_bound_terms(model, images, samples=SAMPLES, seed=0).values())
        bound = {f"bound_{k}_auc": round(v, 4) for k, v in view_aucs(bounds[:, 1] - bounds[:, 0], abnormal, ap).items()}
    return {"setting": setting, "method": config["method"], "labels_per_class": config["labels_per_class"],
            "seed": config["seed"], "split": split, "checkpoint": checkpoint.stem, "epoch": state.get("epoch"),
            "images": len(labels), "ap_share_abnormal": round(float(ap[abnormal].mean()), 4),
            "ap_share_normal": round(float(ap[~abnormal].mean()), 4), **q, **bound, "run_dir": str(checkpoint.parent)}  # fmt: skip


def summary_markdown(rows: list[dict], command: str) -> str:
    """Mean ± sd of each AUC over the seeds of a (setting, method, labels, split, checkpoint)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["setting"], row["method"], int(row["labels_per_class"]), row["split"], row["checkpoint"])
        groups.setdefault(key, []).append(row)

    def cell(members, field):
        mean, sd, _ = mean_sd([float(m[field]) if m.get(field) not in (None, "") else None for m in members])
        return "-" if mean is None else f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")

    heads = " | ".join(f"{who} AUC: {what}" for who in ("q", "bound")
                       for what in ("class", "AP vs PA", "class within PA", "class within AP"))  # fmt: skip
    lines = [command, "", f"| setting | method | labels/class | split | checkpoint | runs | AP share: abnormal, normal | {heads} |",
             "|" + "---|" * 15]  # fmt: skip
    for (setting, method, labels, split, checkpoint), members in sorted(groups.items()):
        cells = " | ".join(cell(members, f"{who}_{r}_auc") for who in ("q", "bound") for r in RANKINGS)
        lines.append(f"| {setting} | {method} | {labels} | {split} | {checkpoint} | {len(members)} | "
                     f"{cell(members, 'ap_share_abnormal')}, {cell(members, 'ap_share_normal')} | {cells} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def quick_run(out: Path, source: Path) -> Path:
    """A 1-epoch ADGM with small networks on the rsna-1500 images at 16x16, 5 labels per class."""
    from data_tools.rsna import prepare_rsna
    from pyro_adgm.training import TrainConfig

    data = out / "prepared-16"
    prepare_rsna(data, root=source, size=16, val_fraction=0.1, test_fraction=0.2, seed=0, workers=0)
    run_dir = out / "adgm-5labels-seed0"
    config = TrainConfig(data=str(data), task="2class", labels_per_class=5, epochs=1, batch_size=64, device="cpu")
    runs.train(config, run_dir=run_dir, model_options={"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)})
    return run_dir


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="*", help="2class run folders (ADGM or supervised) on rsna-1500")
    parser.add_argument("--setting", default="runs", help="the name of the runs given, a column of the table")
    parser.add_argument("--split", choices=("val", runs.UNLABELLED), default=runs.UNLABELLED)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the rsna-1500 folder (its labels.csv)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        views = read_views(args.source)
    except InputError as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    run_dirs = [quick_run(Path(tempfile.mkdtemp(dir=args.out)), args.source)] if args.quick else list(args.run_dirs)
    if not run_dirs:
        parser.error("give run folders (or --quick)")
    for run_dir in run_dirs:  # every folder is checked before any is measured
        if not (run_dir / "config.json").is_file():
            parser.error(f"{run_dir}: not a run folder (no config.json)")
        if json.loads((run_dir / "config.json").read_text())["train"]["task"] != "2class":
            parser.error(f"{run_dir}: a 2class run expected")
    table = args.out / "view_position.csv"
    rows = list(csv.DictReader(table.open(newline=""))) if table.exists() else []
    for run_dir in run_dirs:
        for checkpoint in (run_dir / "best.pt", run_dir / "last.pt"):
            key = (str(run_dir), args.split, checkpoint.stem)
            if not checkpoint.exists() or key in {(r["run_dir"], r["split"], r["checkpoint"]) for r in rows}:
                continue
            rows.append(measure(checkpoint, views, args.setting, args.split))
            print(json.dumps(rows[-1]), flush=True)
            write_rows(rows, table, COLUMNS)
    write_rows(rows, table, COLUMNS)
    shown = "--quick" if args.quick else "RUN_DIR... --setting SETTING"
    atomic_write_text(args.out / "view_position.md", summary_markdown(rows, f"`python benchmarks/view_position.py {shown} --out {args.out}`"))
    print((args.out / "view_position.md").read_text())
    return rows


if __name__ == "__main__":
    main()
