"""What Pyro costs: one SVI training step against a hand-written PyTorch step of the same objective.

Both sides use the same ADGM networks, the same
labelled and unlabelled batches and the same objective J^alpha (labelled bound + alpha * classification term +
unlabelled bound with y summed out exactly, KL terms weighted). The hand-written side computes it with
torch.distributions and steps one torch.optim.Adam; the Pyro side runs
``SVI(model.semi_supervised_model, model.semi_supervised_guide, pyro.optim.Adam, TraceEnum_ELBO)``.
Steps are interleaved (Pyro, torch, Pyro, ...) so that both see the same machine load; medians are reported.
Before timing, both objectives are evaluated on the same noise in eval mode and must agree.

    python benchmarks/pyro_overhead.py                 # 64x64 and 225x225, batch 32
    python benchmarks/pyro_overhead.py --quick         # a smoke run (tests use it)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pyro
import torch
import torch.distributions as td
import torch.nn.functional as F
from pyro.infer import SVI, TraceEnum_ELBO

from pyro_adgm.model import ADGM


def normal(loc, scale):
    return td.Independent(td.Normal(loc, scale), 1)


def image_log_prob(model: ADGM, z, y, x):
    raw = model.image_decoder(z=z, y=y)
    loc, raw_scale = raw.chunk(2, dim=-3)
    return td.Independent(td.Normal(torch.sigmoid(loc), F.softplus(raw_scale) + model.likelihood.min_scale), 3).log_prob(x)


def bound_terms(model: ADGM, x, a, q_a, y, kl_weight):
    """log p(x|z,y) + log p(y) + w (log p(z) + log p(a|z,y,x) - log q(a|x) - log q(z|a,y,x)); shape of y[..., 0]."""
    z_loc, z_scale = model.latent_encoder(x, a=a, y=y)
    z = z_loc + z_scale * torch.randn(z_loc.shape[-2:], dtype=x.dtype)  # one noise for all classes, like the guide
    p_a_loc, p_a_scale = model.aux_decoder(x, z=z, y=y)
    kl = normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z) + normal(p_a_loc, p_a_scale).log_prob(a)
    kl = kl - normal(z_loc, z_scale).log_prob(z) - q_a.log_prob(a)
    log_p_y = (y * model.class_prior.log()).sum(-1)
    return image_log_prob(model, z, y, x) + log_p_y + kl_weight * kl


def torch_loss(model: ADGM, x_l, y_l, x_u, n_l, n_u, kl_weight, alpha):
    """The negative of J^alpha's unbiased estimate, written directly in PyTorch."""
    k = model.num_classes
    a_loc, a_scale = model.aux_encoder(x_l)
    q_a = normal(a_loc, a_scale)
    a = q_a.rsample()
    y = F.one_hot(y_l, k).to(x_l.dtype)
    labelled = bound_terms(model, x_l, a, q_a, y, kl_weight)
    labelled = labelled + alpha * (y * model.classifier(x_l, a=a).log_softmax(-1)).sum(-1)

    a_loc, a_scale = model.aux_encoder(x_u)
    q_a = normal(a_loc, a_scale)
    a = q_a.rsample()
    log_q_y = model.classifier(x_u, a=a).log_softmax(-1)  # (B, K)
    classes = torch.eye(k, dtype=x_u.dtype)[:, None, :]  # (K, 1, K)
    bounds = bound_terms(model, x_u, a, q_a, classes, kl_weight)  # (K, B)
    q_y = log_q_y.exp().T
    unlabelled = (q_y * (bounds - log_q_y.T)).sum(0)
    return -(labelled.sum() * n_l / len(x_l) + unlabelled.sum() * n_u / len(x_u))


def check_same_objective(model: ADGM, batch) -> float:
    """Relative difference of the two objectives in eval mode with the same noise."""
    model.eval()
    with torch.no_grad():
        pyro.set_rng_seed(0)
        ours = TraceEnum_ELBO(max_plate_nesting=1).loss(model.semi_supervised_model, model.semi_supervised_guide,
                                                        *batch[:3], **batch[3])  # fmt: skip
        pyro.set_rng_seed(0)
        theirs = float(torch_loss(model, *batch[:3], batch[3]["labelled_size"], batch[3]["unlabelled_size"],
                                  batch[3]["kl_weight"], batch[3]["alpha"]))  # fmt: skip
    model.train()
    return abs(ours - theirs) / abs(theirs)


def measure(image_size: int, batch_size: int, repeats: int, warmup: int, channels) -> dict:
    torch.manual_seed(0)
    pyro.clear_param_store()
    pyro_model = ADGM(num_classes=2, image_size=image_size, channels=channels)
    torch_model = ADGM(num_classes=2, image_size=image_size, channels=channels)
    torch_model.load_state_dict(pyro_model.state_dict())
    x_l, x_u = torch.rand(batch_size, 1, image_size, image_size), torch.rand(batch_size, 1, image_size, image_size)
    y_l = torch.arange(batch_size) % 2
    kwargs = dict(labelled_size=1000, unlabelled_size=20000, kl_weight=0.5, alpha=21.0)
    batch = (x_l, y_l, x_u, kwargs)
    mismatch = check_same_objective(pyro_model, batch)

    svi = SVI(pyro_model.semi_supervised_model, pyro_model.semi_supervised_guide,
              pyro.optim.Adam({"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 1e-5}), TraceEnum_ELBO(max_plate_nesting=1))  # fmt: skip
    optimizer = torch.optim.Adam(torch_model.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-5)

    def pyro_step():
        svi.step(x_l, y_l, x_u, **kwargs)

    def torch_step():
        loss = torch_loss(torch_model, x_l, y_l, x_u, 1000, 20000, 0.5, 21.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = {"pyro": [], "torch": []}
    for i in range(warmup + repeats):
        for name, step in (("pyro", pyro_step), ("torch", torch_step)):
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    pyro_median, torch_median = statistics.median(times["pyro"]), statistics.median(times["torch"])
    return {
        "image_size": image_size, "batch_size": batch_size, "repeats": repeats,
        "pyro_step_s": pyro_median, "torch_step_s": torch_median, "ratio": pyro_median / torch_median,
        "objective_mismatch": mismatch, "threads": torch.get_num_threads(),
    }  # fmt: skip


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 225])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="28x28, batch 4, 2 repeats, small networks")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    channels = (32, 64, 128, 256, 256)
    if args.quick:
        args.sizes, args.batch_size, args.repeats, args.warmup, channels = [28], 4, 2, 1, (8, 16, 16, 16, 16)
    results = [measure(size, args.batch_size, args.repeats, args.warmup, channels) for size in args.sizes]
    print(f"{'size':>5} {'batch':>5} {'pyro step (s)':>14} {'torch step (s)':>15} {'ratio':>6} {'objective mismatch':>19}")
    for r in results:
        print(f"{r['image_size']:>5} {r['batch_size']:>5} {r['pyro_step_s']:>14.4f} {r['torch_step_s']:>15.4f} {r['ratio']:>6.3f} {r['objective_mismatch']:>19.2e}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
