"""The built-in demo dataset: deterministic procedural chest-X-ray-like phantoms in three classes.

Each phantom is a body silhouette with a spine, two dark lung fields and a heart shadow, with random geometry,
contrast and noise. The classes mirror the RSNA task:

- ``normal``: nothing more;
- ``opacity``: one to three focal bright opacities inside a lung;
- ``not-normal``: abnormal without focal opacity, either an enlarged heart shadow or a diffuse reticular
  texture over both lungs.

Generation takes seconds at any size and needs no download; the same seed gives the same images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data_tools.dataset import FORMAT_VERSION, MAX_SEED, IndexTable, PreparedDataset, stratified_split, tool_version
from data_tools.errors import InputError
from data_tools.plan import PLAN_KEY, finished_with_plan, plan_fingerprint, unchanged_message

DEMO_CLASSES = ("normal", "opacity", "not-normal")
#: The demo used by `pyro-adgm train` without --data and by `pyro-adgm prepare demo`.
DEMO_N_IMAGES, DEMO_IMAGE_SIZE = 3000, 48
DEMO_TASKS = {
    "2class": {"normal": ["normal"], "abnormal": ["opacity", "not-normal"]},
    "3class": {"normal": ["normal"], "opacity": ["opacity"], "not-normal": ["not-normal"]},
}


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float, edge: float) -> np.ndarray:
    """Soft ellipse mask in [0, 1]; ``edge`` is the width of the soft border in normalised units."""
    r = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return np.clip((1.0 - r) / edge, 0.0, 1.0)


def render_phantom(rng: np.random.Generator, size: int, class_name: str) -> np.ndarray:
    """One phantom as float32 (size, size) in [0, 1]; ``v`` runs top to bottom, ``u`` left to right."""
    v, u = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    tilt = rng.uniform(-0.08, 0.08)
    u = u + tilt * v
    body = _ellipse(u, v, 0.0, rng.uniform(0.0, 0.12), rng.uniform(0.72, 0.9), rng.uniform(0.9, 1.1), 0.08)
    image = rng.uniform(0.4, 0.55) * body
    image += 0.18 * _ellipse(u, v, 0.0, 0.1, 0.07, 1.2, 0.5)  # spine
    lung_v = rng.uniform(-0.15, 0.0)
    lung_ru, lung_rv = rng.uniform(0.2, 0.27), rng.uniform(0.42, 0.55)
    lungs = []
    for side in (-1.0, 1.0):
        cu = side * rng.uniform(0.33, 0.42)
        lungs.append((cu, lung_v, lung_ru, lung_rv, _ellipse(u, v, cu, lung_v, lung_ru, lung_rv, 0.25)))
    lung_mask = np.maximum(lungs[0][4], lungs[1][4])
    image -= rng.uniform(0.25, 0.35) * lung_mask

    heart_scale = 1.0
    if class_name == "not-normal" and rng.random() < 0.5:
        heart_scale = rng.uniform(1.6, 1.9)
    elif class_name == "not-normal":
        freq = rng.uniform(14, 22)
        phase = rng.uniform(0, 2 * np.pi, size=2)
        texture = np.sin(freq * u + phase[0]) * np.sin(freq * v + phase[1])
        image += rng.uniform(0.15, 0.22) * lung_mask * (0.5 + 0.5 * texture)
    heart = _ellipse(u, v, 0.08, 0.3, 0.2 * heart_scale, 0.17 * heart_scale, 0.3)
    image += 0.22 * heart

    if class_name == "opacity":
        for _ in range(rng.integers(1, 4)):
            cu, cv, ru, rv, _mask = lungs[rng.integers(0, 2)]
            angle, radius = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.5))
            pu, pv = cu + radius * ru * np.cos(angle), cv + radius * rv * np.sin(angle)
            sigma = rng.uniform(0.07, 0.13)
            image += rng.uniform(0.3, 0.45) * np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * sigma**2))

    gamma = rng.uniform(0.9, 1.1)
    image = np.clip(image, 0.0, 1.0) ** gamma * rng.uniform(0.92, 1.08)
    image += rng.normal(0.0, 0.03, size=image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def check_demo_settings(n_images, image_size, seed) -> None:
    """Raise an :class:`InputError` naming the setting unless the demo data can be drawn: at least one image per
    class, 16 to 256 pixels a side (the sizes the networks take), a seed from 0 to ``MAX_SEED``."""
    for name, value, low, high in (("n_images (--n-images)", n_images, len(DEMO_CLASSES), 10**7),
                                   ("image_size (--size)", image_size, 16, 256), ("seed (--seed)", seed, 0, MAX_SEED)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InputError(f"demo {name}: expected an integer from {low} to {high}, got {value!r}")


def make_demo_dataset(
    n_images: int = DEMO_N_IMAGES,
    image_size: int = DEMO_IMAGE_SIZE,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> PreparedDataset:
    """Generate the demo dataset in memory: classes in equal shares, split by :func:`stratified_split`."""
    check_demo_settings(n_images, image_size, seed)
    rng = np.random.default_rng(seed)
    classes = np.array([DEMO_CLASSES[i % len(DEMO_CLASSES)] for i in range(n_images)], dtype=object)
    classes = classes[rng.permutation(n_images)]
    images = np.empty((n_images, image_size, image_size), dtype=np.uint8)
    for i, name in enumerate(classes):
        images[i] = np.round(255 * render_phantom(rng, image_size, name))
    ids = np.array([f"demo-{i:05d}" for i in range(n_images)], dtype=object)
    splits = stratified_split(ids, classes, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    index = IndexTable(id=ids, patient=ids.copy(), class_name=classes, view=np.full(n_images, "", dtype=object), split=splits)
    meta = {
        "source": "demo",
        "demo": {"n_images": n_images, "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction},
        "preprocessing": "procedural phantoms rendered at the target size",
        "class_names": list(DEMO_CLASSES),
        "tasks": DEMO_TASKS,
        "image_size": image_size,
    }
    return PreparedDataset(images, index, meta)


def prepare_demo(
    out: str | os.PathLike,
    n_images: int = DEMO_N_IMAGES,
    image_size: int = DEMO_IMAGE_SIZE,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    force: bool = False,
) -> tuple[Path, str]:
    """Write the demo dataset to ``out``, unless it is already there with the same settings (and not ``force``).

    Returns the folder and a one-line note: empty after writing, the "nothing to do" line when left alone.
    """
    out = Path(out)
    settings = {"format_version": FORMAT_VERSION, "tool_version": tool_version(), "source": "demo",
                "n_images": n_images, "image_size": image_size, "seed": seed,
                "val_fraction": val_fraction, "test_fraction": test_fraction}  # fmt: skip
    plan = plan_fingerprint(settings, [])
    if not force and finished_with_plan(out, plan, with_report=False) is not None:
        return out, unchanged_message(out)
    dataset = make_demo_dataset(n_images, image_size, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    dataset.meta[PLAN_KEY] = plan
    return dataset.save(out), ""
