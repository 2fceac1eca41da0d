"""The ADGM with its image decoder told the view position: p(x|z,y,v) on RSNA-1500 (``../shared/data/rsna-1500``).

In rsna-1500 the view position goes with the class (AP is 61% of the abnormal images, 18% of the normal ones), and
the bound ranks the unlabelled images by view more than by class (BENCHMARKS.md, "On the unlabelled images and
the view position"): with p(x|z,y) alone, y is the decoder's only handle on the difference between an AP and a PA
film, so the unlabelled term teaches q(y|a,x) the view. Here the view v (AP or PA, DICOM ``ViewPosition``, known
for every image without a radiologist: ``labels.csv``) is an observed input of p(x|z,y,v), so that what y adds
to the decoder's fit has to be something other than the view. Everything else is the product's ADGM: q(a|x),
q(y|a,x), q(z|a,y,x) and p(a|z,y,x) read x as they do (q never sees v, so the classifier is the baseline's), the
same objective, alpha, warm-up and data; only the decoder's conditioning vector is (y, one-hot v) instead of y.

The model is a research extension through the library's own interfaces: a replacement ``image_decoder``
(:class:`ViewDecoder`), an :class:`~pyro_adgm.model.ADGM` subclass that picks each batch's views by its plate,
and a registered objective (``adgm-view``) that looks up the views of a step's images by their positions
(:class:`~pyro_adgm.objectives.Batch` ``labelled_index`` / ``unlabelled_index``).

Protocol as ``benchmarks/rsna_1500.py`` (64x64, 12 epochs, warm-up 8, 2class, selection on ``val``, the best
checkpoint read once on ``test`` and on the run's unlabelled training images); for 2class also what the bound
and q rank by on those images (``view_position.py``'s AUCs, ``OUT/view_rankings.{csv,md}``). The baseline and the
ADGM without v on the same label draws are other scripts' rows, set beside these with ``--compare`` (a table in
``OUT/view_conditioned_TASK.md``). Resumable: finished runs are read back.

    OMP_NUM_THREADS=1 python benchmarks/view_conditioned.py --labels 25 --seeds 0 --out runs/rsna-1500-view
    python benchmarks/view_conditioned.py --summarise-only --out runs/rsna-1500-view \
        --compare supervised=benchmarks/results/rsna_1500_mean.csv,task=2class,method=supervised
    python benchmarks/view_conditioned.py --quick --out /tmp/view-quick      # tiny; a test runs it
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rsna_1500 import DEFAULT_SOURCE, prepared  # noqa: E402
from view_position import COLUMNS as RANKING_COLUMNS  # noqa: E402
from view_position import SAMPLES, read_views, view_aucs  # noqa: E402
from view_position import summary_markdown as ranking_table  # noqa: E402

from pyro_adgm import ADGM, TrainConfig  # noqa: E402
from pyro_adgm import runs  # noqa: E402
from pyro_adgm.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint  # noqa: E402
from pyro_adgm.evaluation import class_bounds, predict_proba  # noqa: E402
from pyro_adgm.label_curve import finished_row, paired_differences, summarise, write_rows  # noqa: E402
from pyro_adgm.objectives import ADGMObjective, register_objective  # noqa: E402

METHOD = "adgm-view"
VIEWS = ("AP", "PA")  # v = 0, 1
COLUMNS = ("method", "labels_per_class", "seed", "val_accuracy", "final_val_accuracy", "test_accuracy", "test_roc_auc",
           "unlabelled_accuracy", "seconds", "run_dir")  # fmt: skip


class ViewDecoder(nn.Module):
    """p(x|z,y,v): an image decoder built for K + V classes, fed (y, one-hot v) as its class input.

    ``view``: int64 (B,), the views of the batch being decoded, set before each call. z: (..., B, Z); y: one-hot
    (..., B, K) or, under enumeration, (K, 1, K); returns the inner decoder's (..., B, P*C, S, S)."""

    def __init__(self, inner: nn.Module, num_views: int):
        super().__init__()
        self.inner, self.num_views = inner, num_views
        self.view: torch.Tensor | None = None

    def forward(self, z: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        if self.view is None:
            raise RuntimeError("ViewDecoder: no views set for this batch")
        v = F.one_hot(self.view, self.num_views).to(y.dtype)  # (B, V)
        lead = torch.broadcast_shapes(y.shape[:-1], z.shape[:-1], v.shape[:-1])  # (..., B)
        condition = torch.cat([y.expand(*lead, y.shape[-1]), v.expand(*lead, self.num_views)], -1)
        return self.inner(z=z, y=condition) if a is None else self.inner(z=z, y=condition, a=a)


class ViewConditionedADGM(ADGM):
    """The ADGM with p(x|z,y,v); ``views``: plate name -> int64 (B,) views of the batch that plate holds
    (``labelled_data``, ``unlabelled_data`` in a training step, ``data`` for a single batch)."""

    def __init__(self, *, num_views: int = len(VIEWS), **options):
        wide = ADGM(**{**options, "num_classes": options["num_classes"] + num_views})  # its decoder reads K + V
        super().__init__(networks={"image_decoder": ViewDecoder(wide.image_decoder, num_views)}, **options)
        self.views: dict[str, torch.Tensor] = {}

    def model(self, x, y=None, *, plate_name: str = "data", **kwargs) -> None:
        self.image_decoder.view = self.views[plate_name]
        super().model(x, y, plate_name=plate_name, **kwargs)


class ViewObjective(ADGMObjective):
    """The ADGM's objective, with each step's views looked up by the positions of its images.
    ``views``: {"labelled": (N_l,), "unlabelled": (N_u,)} int64, in the order of the run's TrainingData."""

    def __init__(self, model: ViewConditionedADGM, config, sizes, views: dict[str, torch.Tensor]):
        if config.eval_batch_size < config.diagnostics_size:
            raise SystemExit("adgm-view: eval_batch_size must be at least diagnostics_size (one batch of views per bound)")
        super().__init__(model, config, sizes)
        self.views = views

    def _views(self, part: str, index: torch.Tensor) -> torch.Tensor:
        return self.views[part].to(index.device)[index]

    def step(self, batch, progress: float) -> float:
        self.model.views = {"labelled_data": self._views("labelled", batch.labelled_index)}
        if batch.unlabelled_index is not None:
            self.model.views["unlabelled_data"] = self._views("unlabelled", batch.unlabelled_index)
        return super().step(batch, progress)

    def bound_per_image(self, images: torch.Tensor, labels: torch.Tensor | None) -> float:
        """The ADGM's bound diagnostic, with the views of the images it reads: the first ``diagnostics_size`` of the
        labelled images (labels given) or of the unlabelled ones (None), in one batch."""
        n = min(len(images), self.config.diagnostics_size)
        self.model.views = {"data": self._views("unlabelled" if labels is None else "labelled", torch.arange(n, device=images.device))}
        return super().bound_per_image(images, labels)


def view_codes(dataset, rows: np.ndarray, views: dict[str, str]) -> torch.Tensor:
    """int64 (len(rows),): each row's view as an index into :data:`VIEWS`; a clear error for an unknown one."""
    patients = dataset.index.patient[rows]
    missing = sorted({p for p in patients if views.get(p) not in VIEWS})
    if missing:
        raise SystemExit(f"labels.csv: no AP/PA ViewPosition for {len(missing)} patient(s), e.g. {missing[0]}")
    return torch.tensor([VIEWS.index(views[p]) for p in patients], dtype=torch.int64)


def one_run(data: Path, source: Path, run_dir: Path, *, task: str, labels: int, seed: int, epochs: int,
            warmup_epochs: float, device: str, model_options: dict) -> dict:  # fmt: skip
    """Train (or continue, or skip) one ADGM with p(x|z,y,v) and evaluate its best checkpoint; its row."""
    dataset = runs.open_dataset(data)
    task_labels, class_names = dataset.task_labels(task)
    labelled, unlabelled = runs.labelled_and_unlabelled_rows(dataset, task_labels, class_names, labels, seed)
    patient_views = read_views(source)
    views = {"labelled": view_codes(dataset, labelled, patient_views), "unlabelled": view_codes(dataset, unlabelled, patient_views)}
    register_objective(METHOD, lambda model, config, sizes: ViewObjective(model, config, sizes, views))

    def build() -> ViewConditionedADGM:
        return ViewConditionedADGM(num_classes=len(class_names), image_size=dataset.image_size, **model_options)

    if not (run_dir / "report.json").exists():
        pyro.set_rng_seed(seed)  # the initialisation is the seed's, as prepare_trainer seeds a model it builds itself
        if (run_dir / "last.pt").exists():
            trainer = runs.prepare_trainer(TrainConfig.from_dict(load_checkpoint(run_dir / "last.pt")["train_config"]),
                                           run_dir=run_dir, model=build())  # fmt: skip
            trainer.fit(resume=True)
        else:
            config = TrainConfig(task=task, labels_per_class=labels, epochs=epochs, seed=seed, method=METHOD,
                                 warmup_epochs=warmup_epochs, device=device, data=str(data.resolve()))  # fmt: skip
            runs.prepare_trainer(config, run_dir=run_dir, model=build()).fit()
    for split in ("test", runs.UNLABELLED):
        if not (run_dir / f"evaluation-{split}.json").exists():
            runs.evaluate(run_dir / "best.pt", split=split, device=device, model=build())
    if task == "2class" and not (run_dir / "view_rankings.json").exists():
        measured = [view_rankings(run_dir / f"{name}.pt", build, patient_views) for name in ("best", "last")]
        atomic_write_json(run_dir / "view_rankings.json", measured)
    row = finished_row(run_dir)
    row["unlabelled_accuracy"] = json.loads((run_dir / f"evaluation-{runs.UNLABELLED}.json").read_text())["accuracy"]
    return row


def view_rankings(checkpoint: Path, build, patient_views: dict[str, str]) -> dict:
    """A row of ``view_position.py``'s table for a checkpoint of this model, on its run's unlabelled training
    images: the ROC AUCs of q(y|a,x)'s margin and of the bound's margin log p(x, abnormal) - log p(x, normal) at
    telling the classes apart, AP from PA, and the classes apart within each view (the bound with each image's own
    view in p(x|z,y,v))."""
    model, state = runs.load_model(checkpoint, "cpu", model=build())
    dataset = runs.open_dataset(state["data"]["data"])
    labels_of_task, class_names = dataset.task_labels(state["train_config"]["task"])
    rows = runs.checkpoint_split_rows(state, runs.UNLABELLED, dataset, labels_of_task, class_names)
    images, labels = runs.load_images(dataset, rows, model.image_size), labels_of_task[rows]
    views = view_codes(dataset, rows, patient_views)
    ap, abnormal = (views == VIEWS.index("AP")).numpy(), labels == 1
    probs = predict_proba(model, images)
    q_margin = np.log(np.clip(probs[:, 1], 1e-30, None)) - np.log(np.clip(probs[:, 0], 1e-30, None))
    chunk, bounds = 256, []
    for start in range(0, len(images), chunk):  # each chunk's views, repeated as class_bounds repeats the images
        part = slice(start, start + chunk)
        model.views = {"data": views[part].repeat(SAMPLES)}
        bounds.append(class_bounds(model, images[part], samples=SAMPLES, batch_size=chunk, seed=start))
    bound = np.concatenate(bounds)
    config = state["train_config"]
    return {"setting": "view-conditioned", "method": config["method"], "labels_per_class": config["labels_per_class"],
            "seed": config["seed"], "split": runs.UNLABELLED, "checkpoint": checkpoint.stem, "epoch": state.get("epoch"),
            "images": len(labels), "ap_share_abnormal": round(float(ap[abnormal].mean()), 4),
            "ap_share_normal": round(float(ap[~abnormal].mean()), 4),
            **{f"q_{k}_auc": round(v, 4) for k, v in view_aucs(q_margin, abnormal, ap).items()},
            **{f"bound_{k}_auc": round(v, 4) for k, v in view_aucs(bound[:, 1] - bound[:, 0], abnormal, ap).items()},
            "run_dir": str(checkpoint.parent)}  # fmt: skip


def compared_rows(spec: str) -> list[dict]:
    """``NAME=FILE,COLUMN=VALUE,...``: the rows of a results CSV that match every COLUMN=VALUE, as method NAME."""
    name, _, rest = spec.partition("=")
    path, *filters = rest.split(",")
    wanted = dict(f.split("=", 1) for f in filters)
    if not name or not Path(path).is_file() or any(not k for k in wanted):
        raise SystemExit(f"--compare {spec!r}: expected NAME=FILE,COLUMN=VALUE,... with an existing FILE")
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if all(r.get(k) == v for k, v in wanted.items())]
    if not rows:
        raise SystemExit(f"--compare {spec!r}: no row of {path} matches {wanted}")
    return [{**r, "method": name} for r in rows]


def cell(mean: float | None, sd: float | None, scale: float = 1.0, digits: int = 3, sign: str = "") -> str:
    """``mean ± sd`` (times ``scale``), ``-`` where there is no mean."""
    if mean is None:
        return "-"
    return f"{scale * mean:{sign}.{digits}f}" + (f" ± {scale * sd:.{digits}f}" if sd is not None else "")


def comparison_markdown(rows: list[dict], baseline: str) -> str:
    """Mean ± sd over seeds of each method, and each method's paired difference from ``baseline`` (points)."""
    lines = ["| labels/class | method | runs | test accuracy | − " + baseline + ", test (points) | test ROC AUC | val accuracy | val, last epoch | unlabelled images' accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    metrics = ("test_accuracy", "test_roc_auc", "val_accuracy", "final_val_accuracy", "unlabelled_accuracy")
    for entry in sorted(summarise(rows, metrics=metrics), key=lambda e: e["labels_per_class"]):
        n, method = entry["labels_per_class"], entry["method"]
        pair = [d for d in paired_differences(rows, method, baseline, metrics=("test_accuracy",)) if d["labels_per_class"] == n]
        gain = cell(pair[0]["test_accuracy_mean"], pair[0]["test_accuracy_sd"], 100, 1, "+") if pair and method != baseline else "-"
        lines.append(f"| {n} | {method} | {entry['runs']} | " + " | ".join(
            [cell(entry["test_accuracy_mean"], entry["test_accuracy_sd"]), gain]
            + [cell(entry[f"{m}_mean"], entry[f"{m}_sd"]) for m in metrics[1:]]) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the rsna-1500 folder")
    parser.add_argument("--task", default="2class", choices=["2class", "3class"])
    parser.add_argument("--labels", type=int, nargs="+", default=[25, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--warmup-epochs", type=float, default=8.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/rsna-1500-view"))
    parser.add_argument("--quick", action="store_true", help="16x16, 5 labels, 1 epoch, 1 seed, small networks")
    parser.add_argument("--compare", nargs="+", default=[], metavar="NAME=FILE,COLUMN=VALUE",
                        help="rows of other methods on the same label draws (results CSVs), for OUT/view_conditioned_TASK.md")
    parser.add_argument("--baseline", default="supervised", help="the --compare NAME the differences are taken from")
    parser.add_argument("--summarise-only", action="store_true", help="train nothing; write the table of finished runs")
    args = parser.parse_args(argv)
    options = {}
    if args.quick:
        args.size, args.labels, args.seeds, args.epochs, args.warmup_epochs = 16, [5], [0], 1, 1.0
        options = {"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)}
    if not (args.source / "labels.csv").is_file():
        parser.error(f"{args.source}: not the rsna-1500 folder (no labels.csv; see ../shared/data/README.md)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    compared = [row for spec in args.compare for row in compared_rows(spec)]
    data = None if args.summarise_only else prepared(args.source, args.out, args.size)
    for seed in [] if args.summarise_only else args.seeds:
        for n in args.labels:
            run_dir = args.out / args.task / f"{METHOD}-{n}labels-seed{seed}"
            one_run(data, args.source, run_dir, task=args.task, labels=n, seed=seed, epochs=args.epochs,
                    warmup_epochs=args.warmup_epochs, device=args.device, model_options=options)  # fmt: skip
    finished = [finished_row(p.parent) | {"unlabelled_accuracy": json.loads(p.read_text())["accuracy"]}
                for p in sorted((args.out / args.task).glob(f"{METHOD}-*/evaluation-{runs.UNLABELLED}.json"))]  # fmt: skip
    write_rows(finished, args.out / f"view_conditioned_{args.task}.csv", COLUMNS)
    rankings = [row for p in sorted((args.out / args.task).glob(f"{METHOD}-*/view_rankings.json")) for row in json.loads(p.read_text())]
    if rankings:
        write_rows(rankings, args.out / "view_rankings.csv", RANKING_COLUMNS)
        atomic_write_text(args.out / "view_rankings.md", ranking_table(rankings, f"`python benchmarks/view_conditioned.py --out {args.out}`"))
    if compared:
        table = comparison_markdown([*compared, *finished], args.baseline)
        (args.out / f"view_conditioned_{args.task}.md").write_text(table)
        print(table)
    for row in finished:
        print(f"{row['labels_per_class']:>4} labels seed {row['seed']}: val {row['val_accuracy']:.3f} "
              f"test {row['test_accuracy']:.3f} (ROC AUC {row['test_roc_auc']:.3f}) unlabelled {row['unlabelled_accuracy']:.3f}")
    return finished


if __name__ == "__main__":
    main()
