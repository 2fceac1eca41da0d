"""Swap a network of the ADGM for your own: a torchvision ResNet-18 trunk inside the classifier q(y|a,x).

Any of the five networks (``aux_encoder``, ``classifier``, ``latent_encoder``, ``aux_decoder``,
``image_decoder``) can be replaced by a module with the same call signature (see :mod:`pyro_adgm.networks`).
For the four that read x, the easy way is to keep the library's head and change only the trunk: a trunk is any
module mapping x (B, 1, S, S) float in [0, 1] to features (B, F) and carrying ``out_features = F``. Here
``CategoricalNet(trunk, {"a": a_dim}, num_classes)`` puts a ResNet-18 (random initialisation, one input channel,
no final layer: 512 features) under q(y|a,x); the other four networks stay the default convolutional ones. The
model then trains with the same trainer as the CLI, on the built-in demo phantoms.

Run from anywhere (no data needed)::

    python examples/custom_encoder.py --epochs 5            # the CLI's demo phantoms
    python examples/custom_encoder.py --quick               # a few steps at 28x28 (the test suite's mode)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from pyro_adgm import ADGM, CategoricalNet, TrainConfig, train
from pyro_adgm.runs import DEMO_DEFAULTS


class ResNetTrunk(nn.Module):
    """ResNet-18 as a trunk: x (B, C, S, S) float in [0, 1] -> features (B, 512), for any S >= 8."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()
        self.net = net
        self.out_features = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_model(*, num_classes: int, image_size: int, small: bool = False) -> ADGM:
    """The chest X-ray model with a ResNet-18 classifier; ``small`` shrinks the four other networks."""
    options = dict(a_dim=8, z_dim=8, channels=(8, 16, 32, 32, 32), hidden=(32,)) if small else dict(a_dim=64, z_dim=64)
    classifier = CategoricalNet(ResNetTrunk(), {"a": options["a_dim"]}, num_classes, hidden=options.get("hidden", (256,)))
    return ADGM(num_classes=num_classes, image_size=image_size, networks={"classifier": classifier}, **options)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--task", default="2class", choices=["2class", "3class"])
    parser.add_argument("--labels-per-class", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/custom-encoder"), help="run directory (must not hold a run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="150 phantoms at 28x28, small networks, one epoch")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Train the model with the ResNet-18 classifier; print and return the validation report of the best checkpoint."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        demo, labels_per_class, epochs = {"n_images": 150, "image_size": 28, "seed": 0}, 5, 1
    else:
        demo, labels_per_class, epochs = dict(DEMO_DEFAULTS), args.labels_per_class, args.epochs
    num_classes = 2 if args.task == "2class" else 3
    model = build_model(num_classes=num_classes, image_size=demo["image_size"], small=args.quick)
    n_params = sum(p.numel() for p in model.classifier.parameters())
    # a short run: the KL warm-up spans all of it rather than the paper's 100 epochs
    config = TrainConfig(task=args.task, labels_per_class=labels_per_class, epochs=epochs,
                         batch_size=16 if args.quick else 32, warmup_epochs=epochs, device=args.device)
    report, run_dir = train(config, demo=demo, model=model, run_dir=args.out)
    print(f"q(y|a,x) with a ResNet-18 trunk ({n_params / 1e6:.1f}M parameters): validation accuracy "
          f"{100 * report['accuracy']:.1f}% on {report['n']} images after {report['epochs']} epoch(s); "
          f"run in {run_dir}")
    return report


if __name__ == "__main__":
    main()
