"""Throughput and peak memory of `pyro-adgm prepare rsna` against the original approach.

The data: the 16 real RSNA DICOMs of ``../shared/data/rsna`` (1024 x 1024, JPEG Baseline) copied under new
names until there are ``--n`` files, with CSVs that label them; where that folder is absent, synthetic
1024 x 1024 JPEG DICOMs stand in (the output says so).

The methods, each timed in its own process (interpreter start-up and imports not counted):

- ``original``: one process, one image at a time: pydicom's pixel array (its Pillow plugin, the fastest
  here) and
  ``skimage.transform.resize(..., (S, S), anti_aliasing=True)``, as the original code did on every epoch;
- ``prepare, W workers``: :func:`data_tools.rsna.prepare_rsna` end to end (CSV reading, decoding, writing
  ``images.npy``, index, report, atomic publication).

Repeats are interleaved (original, 1 worker, 2 workers, original, ...) so that background load falls on all
alike; the table shows medians. Peak memory is the largest sum of the resident set sizes of the measured
process and its worker processes, sampled every 20 ms, at two dataset sizes to show whether it grows.

    python benchmarks/prepare_throughput.py --n 2000          # the figures in BENCHMARKS.md
    python benchmarks/prepare_throughput.py --quick           # ~32 images, a smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_IMAGES = REPO.parent / "shared" / "data" / "rsna" / "stage_2_train_images"
CLASSES = ("Normal", "Lung Opacity", "No Lung Opacity / Not Normal")


# the data


def _synthetic_sources(folder: Path, count: int = 16) -> list[Path]:
    """Stand-ins for the real files: 1024 x 1024 8-bit JPEG Baseline DICOMs of smooth noise."""
    sys.path.insert(0, str(REPO / "tests"))
    import numpy as np
    from data_helpers import phantom, stored_values, write_dicom

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        image = phantom(1024, 1024, seed=i) * 0.8 + 0.2 * rng.random((1024, 1024))
        paths.append(write_dicom(folder / f"synthetic-{i:02d}.dcm", stored_values(image, 8), jpeg=True, quality=90))
    return paths


def make_dataset(root: Path, n: int) -> str:
    """``root`` in the Kaggle layout with ``n`` DICOMs; returns a description of where they came from."""
    images = root / "stage_2_train_images"
    images.mkdir(parents=True)
    if REAL_IMAGES.is_dir() and any(REAL_IMAGES.glob("*.dcm")):
        sources = sorted(REAL_IMAGES.glob("*.dcm"))
        origin = f"the {len(sources)} real RSNA DICOMs"
    else:
        sources, origin = _synthetic_sources(root / "sources"), "16 synthetic 1024x1024 JPEG DICOMs (real data absent)"
    with open(root / "stage_2_train_labels.csv", "w", newline="") as labels, open(
        root / "stage_2_detailed_class_info.csv", "w", newline=""
    ) as classes:
        lw, cw = csv.writer(labels), csv.writer(classes)
        lw.writerow(["patientId", "x", "y", "width", "height", "Target"])
        cw.writerow(["patientId", "class"])
        for i in range(n):
            patient = f"bench-{i:05d}"
            shutil.copyfile(sources[i % len(sources)], images / f"{patient}.dcm")
            name = CLASSES[i % 3]
            lw.writerow([patient, "", "", "", "", int(name == "Lung Opacity")])
            cw.writerow([patient, name])
    return f"{n} copies of {origin}"


# the measured processes


def child_original(root: Path, size: int) -> dict:
    import numpy as np
    import pydicom
    from skimage.transform import resize

    paths = sorted((root / "stage_2_train_images").glob("*.dcm"))
    start = time.perf_counter()
    for path in paths:
        # Pillow: the fastest of pydicom's JPEG plugins here, so the original is measured at its best.
        pixels = pydicom.pixels.pixel_array(path, decoding_plugin="pillow")
        resized = resize(pixels, (size, size), anti_aliasing=True)
        np.round(resized * 255).astype(np.uint8)  # skimage returns [0, 1] floats for integer input
    return {"seconds": time.perf_counter() - start, "images": len(paths)}


def child_prepare(root: Path, out: Path, size: int, workers: int) -> dict:
    from data_tools.rsna import prepare_rsna

    start = time.perf_counter()
    result = prepare_rsna(out, root=root, size=size, workers=workers)
    seconds = time.perf_counter() - start
    assert result.n_failed == 0
    return {"seconds": seconds, "images": result.n_images}


def _tree_rss_bytes(pid: int) -> int:
    """Sum of VmRSS over ``pid`` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def measure(args: list[str]) -> dict:
    """Run this script as a child with ``args``; return its JSON result plus the peak tree RSS in MiB."""
    process = subprocess.Popen([sys.executable, __file__, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_bytes(process.pid))
        time.sleep(0.02)
    output = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed with status {process.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_mib"] = peak / 2**20
    result["rate"] = result["images"] / result["seconds"]
    return result


# the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="images in the throughput runs")
    parser.add_argument("--size", type=int, default=225)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="32 images, one repeat: a smoke test")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=["original", "prepare"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        sys.path.insert(0, str(REPO))
        if args.child == "original":
            result = child_original(args.root, args.size)
        else:
            result = child_prepare(args.root, args.out, args.size, args.workers)
        print(json.dumps(result))
        return

    n, repeats = (32, 1) if args.quick else (args.n, args.repeats)
    small_n = max(n // 4, 8)
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        tmp = Path(tmp)
        origin = make_dataset(tmp / "big", n)
        make_dataset(tmp / "small", small_n)
        methods = {
            "original (pydicom + skimage, 1 process)": lambda root, out: ["--child", "original", "--root", str(root)],
            "prepare rsna, 1 worker": lambda root, out: ["--child", "prepare", "--root", str(root), "--out", str(out),
                                                         "--workers", "1"],
            "prepare rsna, 2 workers": lambda root, out: ["--child", "prepare", "--root", str(root), "--out", str(out),
                                                          "--workers", "2"],
        }
        runs: dict[str, list[dict]] = {name: [] for name in methods}
        for repeat in range(repeats):
            for name, make_args in methods.items():
                out = tmp / "out"
                result = measure([*make_args(tmp / "big", out), "--size", str(args.size)])
                shutil.rmtree(out, ignore_errors=True)
                runs[name].append(result)
                print(f"repeat {repeat + 1}/{repeats} {name}: {result['rate']:.1f} images/s, "
                      f"peak {result['peak_mib']:.0f} MiB", file=sys.stderr)
        small_args = methods["prepare rsna, 2 workers"](tmp / "small", tmp / "out-small")
        small = measure([*small_args, "--size", str(args.size)])

    base = statistics.median(r["rate"] for r in runs["original (pydicom + skimage, 1 process)"])
    summary = {
        "data": origin,
        "size": args.size,
        "repeats": repeats,
        "cpus": len(os.sched_getaffinity(0)),
        "methods": {
            name: {
                "median_images_per_s": statistics.median(r["rate"] for r in results),
                "rates": [r["rate"] for r in results],
                "ratio_to_original": statistics.median(r["rate"] for r in results) / base,
                "median_peak_mib": statistics.median(r["peak_mib"] for r in results),
            }
            for name, results in runs.items()
        },
        "peak_memory_by_dataset_size": {
            str(small_n): small["peak_mib"],
            str(n): statistics.median(r["peak_mib"] for r in runs["prepare rsna, 2 workers"]),
        },
    }
    print(f"\n{summary['data']}, {args.size}x{args.size}, median of {repeats}, {summary['cpus']} CPUs\n")
    print("| method | images/s (median) | runs | × original | peak RSS (MiB) |")
    print("|---|---|---|---|---|")
    for name, row in summary["methods"].items():
        rates = ", ".join(f"{r:.1f}" for r in row["rates"])
        print(f"| {name} | {row['median_images_per_s']:.1f} | {rates} | {row['ratio_to_original']:.2f} "
              f"| {row['median_peak_mib']:.0f} |")
    sizes = ", ".join(f"{k} images: {v:.0f} MiB" for k, v in summary["peak_memory_by_dataset_size"].items())
    print(f"\npeak RSS of prepare rsna with 2 workers (parent + workers): {sizes}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
