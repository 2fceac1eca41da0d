"""Classifier evaluation: batched class probabilities and the metrics of a report (via scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from sklearn.metrics import confusion_matrix, roc_auc_score

from pyro_adgm.model import ADGM


def to_float_images(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, S, S) or (B, C, S, S) -> float (B, C, S, S) in [0, 1]."""
    x = images_uint8.float().div_(255)
    return x.unsqueeze(1) if x.dim() == 3 else x


def predict_proba(model: ADGM, images: torch.Tensor, *, batch_size: int = 256, device: torch.device | str = "cpu",
                  num_samples: int = 0) -> np.ndarray:  # fmt: skip
    """Class probabilities (N, K) for uint8 images (N, S, S) (any device or a numpy array)."""
    images = torch.as_tensor(images)
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = to_float_images(images[start : start + batch_size].to(device))
        out.append(model.classify(x, num_samples=num_samples).cpu())
    if not out:
        return np.zeros((0, model.num_classes), dtype=np.float32)
    return torch.cat(out).numpy()


def class_bounds(model: ADGM, images: torch.Tensor, *, samples: int = 4, batch_size: int = 256,
                 device: torch.device | str = "cpu", seed: int = 0) -> np.ndarray:  # fmt: skip
    """The bound on log p(x, y) of every image for every class, in nats: (N, K) for uint8 images (N, S, S).

    Row i, column k is the ELBO of image i labelled k, log p(x,y,a,z) - log q(a,z|x,y) with the model's own
    Pyro programs (``model.model`` with y observed, ``model.guide``), averaged over ``samples`` draws of a
    and z in eval mode (no dropout). The classes of one draw share a ~ q(a|x) and the standard-normal noise of
    z, as in training. This is what the unlabelled term compares: its optimal q(y|a,x) is the model's posterior
    softmax over k of these bounds (which include log p(y)), so the argmax of a row is the class that the
    unlabelled images teach the classifier. Seeded; the global random state is left as it was. The sum over
    the terms of :func:`class_bound_terms`.
    """
    terms = class_bound_terms(model, images, samples=samples, batch_size=batch_size, device=device, seed=seed)
    return sum(terms.values()) if terms else np.zeros((0, model.num_classes), dtype=np.float32)


def class_bound_terms(model: ADGM, images: torch.Tensor, *, samples: int = 4, batch_size: int = 256,
                      device: torch.device | str = "cpu", seed: int = 0) -> dict[str, np.ndarray]:  # fmt: skip
    """:func:`class_bounds` split by where its dependence on y comes from, each (N, K) in nats, summing to it:

    - ``pixels``: log p(x|z,y), the image's likelihood;
    - ``aux``: log p(a|z,y,x) - log q(a|x), the auxiliary variable's terms (p(a|z,y,x) reads x as well);
    - ``latent``: log p(z) - log q(z|a,y,x), minus the KL of z;
    - ``prior``: log p(y);
    - ``other``: the sample sites of a model or guide extended with sites of its own (model's plus, guide's
      minus), only where there are any.
    Same draws and seeding as :func:`class_bounds`; an empty dict for no images.
    """
    images = torch.as_tensor(images)
    names = {"pixels": (("model", "x"),), "aux": (("model", "a"), ("guide", "a")), "latent": (("model", "z"), ("guide", "z")),
             "prior": (("model", "y"),)}  # fmt: skip
    out: dict[str, list[torch.Tensor]] = {}
    with model.evaluating(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, images.shape[0], batch_size):
            x = to_float_images(images[start : start + batch_size].to(device))
            batch = x.shape[0]
            x = x.repeat(samples, 1, 1, 1)  # draw d of image i at row d * batch + i
            labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            a = poutine.trace(model.guide).get_trace(x, labels).nodes["a"]["value"]
            z_noise_seed = int(torch.randint(2**62, ()))
            per_class: dict[str, list[torch.Tensor]] = {}
            for k in range(model.num_classes):
                torch.manual_seed(z_noise_seed)  # the same noise for z under every class
                guide = poutine.trace(poutine.condition(model.guide, data={"a": a})).get_trace(x, labels + k)
                latents = {"a": a, "z": guide.nodes["z"]["value"]}
                joint = poutine.trace(poutine.condition(model.model, data=latents)).get_trace(x, labels + k)
                signed = {("model", site): value for site, value in site_log_probs(joint).items()}
                signed.update({("guide", site): -value for site, value in site_log_probs(guide).items()})
                for name, parts in names.items():
                    per_class.setdefault(name, []).append(sum(signed.pop(part) for part in parts))
                if signed:
                    per_class.setdefault("other", []).append(sum(signed.values()))
            for name, values in per_class.items():
                out.setdefault(name, []).append(torch.stack(values, -1).reshape(samples, batch, model.num_classes).mean(0).cpu())
    return {name: torch.cat(parts).numpy() for name, parts in out.items()} if images.shape[0] else {}


def site_log_probs(trace) -> dict[str, torch.Tensor]:
    """Each sample site's log density per image (B,), observed sites included, by site name (not the plates'
    subsample sites)."""
    trace.compute_log_prob()
    return {name: site["log_prob"] for name, site in trace.nodes.items() if site["type"] == "sample" and not site_is_subsample(site)}


def classification_report(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, per-class accuracy (recall), confusion matrix (rows true, columns predicted) and ROC AUC.

    ROC AUC is that of the abnormal-vs-rest score for two classes, one-vs-rest macro average otherwise; None
    where a class is missing from ``labels``.
    """
    labels = np.asarray(labels)
    k = len(class_names)
    predicted = probs.argmax(1)
    matrix = confusion_matrix(labels, predicted, labels=list(range(k)))
    per_class = {name: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None) for i, name in enumerate(class_names)}
    auc = None
    if len(labels) and len(np.unique(labels)) == k:
        auc = float(roc_auc_score(labels, probs[:, 1])) if k == 2 else float(roc_auc_score(labels, probs, multi_class="ovr"))
    return {
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()) if len(labels) else None,
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "roc_auc": auc,
        "class_names": list(class_names),
    }


def adjust_to_class_shares(probs: np.ndarray, trained_prior: Sequence[float] | torch.Tensor,
                           shares: Sequence[float]) -> np.ndarray:  # fmt: skip
    """Posteriors (N, K) re-weighted from the class shares a classifier was fitted to (``trained_prior``, K; a
    tensor such as ``model.prior_probs()`` is fine, on any device) to other shares (K,):
    p'(y|x) ∝ p(y|x) * shares_y / trained_prior_y (Saerens et al. 2002), rows summing to 1. For images whose
    classes occur in other proportions than during training, where those are known."""
    if isinstance(trained_prior, torch.Tensor):
        trained_prior = trained_prior.detach().cpu().numpy()
    ratio = np.asarray(shares, dtype=np.float64) / np.asarray(trained_prior, dtype=np.float64)
    adjusted = np.asarray(probs, dtype=np.float64) * ratio
    return adjusted / adjusted.sum(1, keepdims=True)


def best_threshold_accuracy(p_last: np.ndarray, labels: np.ndarray) -> float:
    """2 classes: the accuracy at the best cut of the score p(last class) (N,); reads the labels, so it is an
    upper bound for diagnostics, never a way to choose a model."""
    order = np.argsort(-p_last)
    positives = np.concatenate([[0], np.cumsum(labels[order] == 1)])  # predicted positive: the first k
    negatives_below = (labels == 0).sum() - np.concatenate([[0], np.cumsum(labels[order] == 0)])
    return float(((positives + negatives_below) / len(labels)).max())


def generated_images(model: ADGM, per_class: int, *, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``per_class`` images of each class from p(x|z,y), z ~ p(z) (seeded): uint8 (K * per_class, S, S) grey
    levels and their requested classes (K * per_class,), class by class."""
    generator = torch.Generator().manual_seed(seed)
    device = model.class_prior.device
    images, labels = [], []
    for k in range(model.num_classes):
        z = torch.randn(per_class, model.z_dim, generator=generator).to(device)
        x = model.generate(k, z=z)[:, 0]
        images.append((x * 255).round().clamp(0, 255).to(torch.uint8).cpu())
        labels.append(np.full(per_class, k))
    return torch.cat(images), np.concatenate(labels)


def generation_accuracy(generator: ADGM, classifier: ADGM, per_class: int = 200, *, seed: int = 0) -> dict:
    """How often an independent classifier (one trained on real labelled images, such as the supervised
    baseline) assigns images generated for a class to that class: overall and per class, with the mean
    probability it gives the requested class. Both models see images of the same size."""
    if generator.num_classes != classifier.num_classes or generator.image_size != classifier.image_size:
        raise ValueError(f"classifier: expected {generator.num_classes} classes at {generator.image_size}px like the generator, "
                         f"got {classifier.num_classes} at {classifier.image_size}px")  # fmt: skip
    images, requested = generated_images(generator, per_class, seed=seed)
    probs = predict_proba(classifier, images, device=classifier.class_prior.device)
    hits = probs.argmax(1) == requested
    per_class_hits = {k: float(hits[requested == k].mean()) for k in range(generator.num_classes)}
    return {"accuracy": float(hits.mean()), "per_class_accuracy": per_class_hits,
            "mean_requested_probability": float(probs[np.arange(len(requested)), requested].mean()), "per_class": per_class}  # fmt: skip


def without_detail(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, S, S) with the detail finer than ``size`` x ``size`` removed: area-averaged down to ``size``
    and bilinearly back to S (``size`` >= S: the images themselves). A control for judging generated images,
    whose means of p(x|z,y) are smoother than real images."""
    full = images.shape[-1]
    if size >= full:
        return images
    small = F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(small, size=(full, full), mode="bilinear", align_corners=False)


def detail_control(classifier: ADGM, images: torch.Tensor, labels: np.ndarray, sizes: Sequence[int]) -> dict[int, dict[int, float]]:
    """The classifier's per-class accuracy on real uint8 images (N, S, S) or (N, C, S, S) with labels (N,) at each detail
    ``size`` (:func:`without_detail`): {size: {class: accuracy}}, classes without images left out. How much a
    judge of generated images reads smoothness as a class."""
    x = to_float_images(images)
    result = {}
    for size in sizes:
        smooth = (without_detail(x, size) * 255).round().clamp(0, 255).to(torch.uint8)
        predicted = predict_proba(classifier, smooth, device=classifier.class_prior.device).argmax(1)
        result[int(size)] = {k: float((predicted[labels == k] == k).mean()) for k in range(classifier.num_classes) if (labels == k).any()}
    return result
