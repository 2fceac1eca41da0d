"""Is a trained classifier fitted to the images as stored, or only to transformed ones? Checkpoints on a split.

Training transforms images at random (flips, scaling, shifts, rotations; ``--augment-probability``); evaluation
uses them as stored. For each checkpoint this classifies the split's images (default ``val``) as stored and
after each of a few transforms, and reports accuracy, ROC AUC, the mean predicted probability of every class
(against the share of each class in the split) and the accuracy of the same model with its decision threshold
moved to the best possible place (an upper bound that reads the labels; never used to select anything). A model
fitted to transformed images only scores much better on transformed copies than on the images themselves.

    python benchmarks/augment_mismatch.py runs/stability-local/l100-bound-avg/last.pt --json mismatch.json
    python benchmarks/augment_mismatch.py --quick      # a 1-epoch demo run, then its check (tests use it)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from pyro_adgm.augment import AugmentSettings, DeviceAugment
from pyro_adgm.evaluation import best_threshold_accuracy, to_float_images
from pyro_adgm.runs import checkpoint_split, load_model


def shift_one_pixel(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, S, S) moved one pixel right and down, zeros entering: no resampling, only a border."""
    return F.pad(x, (1, 0, 1, 0))[..., : x.shape[-2], : x.shape[-1]]


def transforms(repeats: int) -> dict:
    """name -> (callable on (B, C, S, S) images, number of draws whose probabilities are averaged); the random
    ones transform every image (probability 1)."""
    full = DeviceAugment(AugmentSettings(probability=1.0))
    zoom_in = DeviceAugment(AugmentSettings(flip=False, translate=0.0, rotate=0.0, scale=(1.1, 1.2), probability=1.0))
    return {
        "as stored": (lambda x: x, 1),
        "mirrored": (lambda x: x.flip(-1), 1),
        "shifted 1 px": (shift_one_pixel, 1),
        "zoomed in 1.1-1.2x": (zoom_in, 1),
        "random transform": (full, 1),
        f"mean of {repeats} random transforms": (full, repeats),
    }


def probabilities(model, x: torch.Tensor, transform, draws: int = 1, batch: int = 256) -> np.ndarray:
    """Class probabilities (N, K) of q(y|a,x) for the transformed images, averaged over ``draws`` draws."""
    with torch.no_grad():
        runs = [torch.cat([model.classify(transform(x[i : i + batch])) for i in range(0, len(x), batch)]) for _ in range(draws)]
    return torch.stack(runs).mean(0).numpy()


def check(checkpoint: Path, split: str, repeats: int, seed: int) -> dict:
    model, state = load_model(checkpoint, "cpu")
    images, y, class_names, _ = checkpoint_split(state, split, model.image_size)
    x = to_float_images(images)
    result = {"checkpoint": str(checkpoint), "split": split, "n": len(y), "class_names": list(class_names),
              "class_share": [float((y == k).mean()) for k in range(len(class_names))], "rows": []}  # fmt: skip
    for name, (transform, draws) in transforms(repeats).items():
        torch.manual_seed(seed)
        p = probabilities(model, x, transform, draws)
        row = {"transform": name, "accuracy": float((p.argmax(1) == y).mean()), "mean_probability": p.mean(0).tolist()}
        if len(class_names) == 2:
            row["roc_auc"] = float(roc_auc_score(y, p[:, 1])) if len(set(y)) == 2 else None
            row["best_threshold_accuracy"] = best_threshold_accuracy(p[:, 1], y)
        result["rows"].append(row)
    return result


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        share = " / ".join(f"{s:.3f}" for s in r["class_share"])
        lines += [f"`{r['checkpoint']}` on {r['split']} ({r['n']} images; share of {' / '.join(r['class_names'])}: {share})", "",
                  "| images | accuracy | ROC AUC | mean predicted probabilities | accuracy at the best threshold |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for row in r["rows"]:
            auc = "-" if row.get("roc_auc") is None else f"{row['roc_auc']:.3f}"
            best = "-" if row.get("best_threshold_accuracy") is None else f"{row['best_threshold_accuracy']:.3f}"
            lines.append(f"| {row['transform']} | {row['accuracy']:.3f} | {auc} | "
                         f"{' / '.join(f'{m:.3f}' for m in row['mean_probability'])} | {best} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def quick_checkpoint(folder: Path) -> Path:
    from pyro_adgm.runs import train
    from pyro_adgm.training import TrainConfig

    config = TrainConfig(task="2class", labels_per_class=3, epochs=1, batch_size=16, warmup_epochs=1, device="cpu")
    options = {"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)}
    _, run_dir = train(config, demo={"n_images": 90, "image_size": 28, "seed": 0}, run_dir=folder / "run", model_options=options)
    return run_dir / "best.pt"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--split", default="val", choices=("train", "val"), help="never test: this is a diagnostic")
    parser.add_argument("--repeats", type=int, default=8, help="random transforms averaged in the last row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.checkpoints, args.repeats = [quick_checkpoint(Path(tmp))], 2
        if not args.checkpoints:
            parser.error("give at least one checkpoint (best.pt or last.pt of a run)")
        results = [check(c, args.split, args.repeats, args.seed) for c in args.checkpoints]
    text = markdown(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "markdown": text}, indent=2))
    return results


if __name__ == "__main__":
    main()
