"""Conditional generation (Fig. 7 of Cerri & Fraccaro): are images drawn for a class recognised as that class?

Draws ``--per-class`` images of each class from a trained ADGM's p(x|z,y) (z ~ p(z), seeded) and classifies them
with an independent classifier, the supervised baseline trained on real labelled images of the same data. Writes,
under ``--out``: ``generation_accuracy.json`` (overall and per-class accuracy, the mean probability of the
requested class) and ``generated_grid.png`` (one row of images per class, the classes top to bottom), and adds a
row to ``generation_accuracy.md``. ``--detail-sizes`` adds a control: the classifier's per-class accuracy on the
real ``val`` images of its data with the detail finer than each size removed (area-averaged down and back up),
since the images drawn (the means of p(x|z,y)) are smoother than real ones; rows in ``generation_detail_control.md``.

    python benchmarks/generation_accuracy.py --adgm runs/ablation/all/adgm-100labels-seed0/best.pt \\
        --classifier runs/ablation/supervised/supervised-100labels-seed0/best.pt --name PneumoniaMNIST
    python benchmarks/generation_accuracy.py --quick          # tiny demo runs; a test runs it
    python benchmarks/generation_accuracy.py --adgm A/best.pt --classifier B/best.pt --name X --detail-sizes 32 16 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from pyro_adgm import runs
from pyro_adgm.checkpoint import atomic_write_json, atomic_write_text
from pyro_adgm.evaluation import detail_control, generation_accuracy
from pyro_adgm.plots import save_image_grid

DETAIL_HEADER = "| data | classifier | detail (pixels) | per-class accuracy on real `val` images |\n|---|---|---|---|\n"
ROWS_HEADER = "| data | classes | images per class | accuracy | per class | mean p(requested class) | ADGM checkpoint | classifier |\n|---|---|---|---|---|---|---|---|\n"


def quick_checkpoints(out: Path) -> tuple[Path, Path]:
    """A one-epoch ADGM and supervised baseline on the tiny demo phantoms."""
    from pyro_adgm.training import TrainConfig

    sizes = {"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)}
    demo = {"n_images": 150, "image_size": 28, "seed": 0}
    paths = []
    for method in ("adgm", "supervised"):
        config = TrainConfig(task="2class", labels_per_class=5, epochs=1, batch_size=16, device="cpu", method=method)
        _, run_dir = runs.train(config, demo=demo, run_dir=out / method, model_options=sizes)
        paths.append(run_dir / "best.pt")
    return paths[0], paths[1]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adgm", type=Path, help="the ADGM's checkpoint (best.pt)")
    parser.add_argument("--classifier", type=Path, help="the supervised baseline's checkpoint, trained on the same data")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--grid-per-class", type=int, default=10, help="images of each class in the grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="", help="the data set's name, for the table")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--detail-sizes", type=int, nargs="*", default=[],
                        help="also judge the classifier's real val images with the detail finer than each size removed")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        scratch = Path(tempfile.mkdtemp(prefix="generation-"))
        args.adgm, args.classifier = quick_checkpoints(scratch)
        args.per_class, args.name, args.out = 8, "demo (quick)", scratch / "results"
        args.detail_sizes = [14]
    if args.adgm is None or args.classifier is None:
        parser.error("--adgm and --classifier are required (or --quick)")
    generator, state = runs.load_model(args.adgm, "cpu")
    classifier, classifier_state = runs.load_model(args.classifier, "cpu")
    if state["train_config"]["method"] != "adgm":
        parser.error(f"{args.adgm}: expected an ADGM checkpoint, got one of method {state['train_config']['method']!r}")
    result = generation_accuracy(generator, classifier, args.per_class, seed=args.seed)
    names = list(state["class_names"])
    result.update(class_names=names, adgm=str(args.adgm), classifier=str(args.classifier), data=args.name, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.detail_sizes:
        images, labels, _, _ = runs.checkpoint_split(classifier_state, "val", classifier.image_size)
        sizes = [classifier.image_size, *args.detail_sizes]
        result["detail_control"] = detail_control(classifier, images, labels, sizes)
        table = args.out / "generation_detail_control.md"
        rows = table.read_text() if table.exists() else DETAIL_HEADER
        for size, accuracy in result["detail_control"].items():
            rows += (f"| {args.name} | `{args.classifier}` | {size} | "
                     f"{', '.join(f'{names[k]} {v:.3f}' for k, v in accuracy.items())} |\n")  # fmt: skip
        atomic_write_text(table, rows)
    stem = args.name.lower().replace(" ", "_").replace("(", "").replace(")", "") or "generation"
    atomic_write_json(args.out / f"generation_accuracy_{stem}.json", result)
    torch.manual_seed(args.seed)
    grid = torch.cat([generator.generate(k, args.grid_per_class) for k in range(generator.num_classes)])
    save_image_grid(grid, args.out / f"generated_grid_{stem}.png", nrow=args.grid_per_class)
    table = args.out / "generation_accuracy.md"
    rows = table.read_text() if table.exists() else ROWS_HEADER
    per_class = ", ".join(f"{names[k]} {v:.3f}" for k, v in result["per_class_accuracy"].items())
    rows += (f"| {args.name} | {', '.join(names)} | {args.per_class} | {result['accuracy']:.3f} | {per_class} | "
             f"{result['mean_requested_probability']:.3f} | `{args.adgm}` | `{args.classifier}` |\n")  # fmt: skip
    atomic_write_text(table, rows)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
