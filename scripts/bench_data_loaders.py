"""Time the loaders of users' own files, round-robin in one process (medians, ratios).

    python scripts/bench_data_loaders.py [--images 5000] [--rows 10000] [--repeats 3]

Writes an image folder of 28x28 grey PNGs (10 classes) and a Kaggle-layout CSV of random
8-bit pixels (label + 784 columns) to a temporary folder, then times:
dsflow's image_folder (all, and n_per_class=100) against torchvision's ImageFolder +
ToTensor over the same folder, and pixel_csv (integer fast path) against numpy.loadtxt of the
same file (what the CSV reader falls back to).  One torch thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_files(root: Path, images: int, rows: int) -> tuple[Path, Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "folder"
    for i in range(images):
        cls = folder / str(i % 10)
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(cls / f"{i}.png")
    table = root / "train.csv"
    with open(table, "w") as f:
        f.write("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n")
        np.savetxt(f, np.column_stack([np.arange(rows) % 10, rng.integers(0, 256, (rows, 784))]), fmt="%d",
                   delimiter=",")
    return folder, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    from dsflow.data import image_folder, pixel_csv

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder, table = write_files(Path(tmp), args.images, args.rows)
        cases = {
            f"image_folder, {args.images} PNGs": lambda: image_folder(folder),
            "image_folder, n_per_class=100": lambda: image_folder(folder, n_per_class=100),
            "torchvision ImageFolder + ToTensor": lambda: torch.stack([x for x, _ in ImageFolder(str(folder),
                                                                                                  transform=ToTensor())]),
            f"pixel_csv, {args.rows} x 785": lambda: pixel_csv(table),
            "numpy.loadtxt of the same CSV": lambda: np.loadtxt(table, delimiter=",", skiprows=1, dtype=np.float32),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, fn in cases.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, v in times.items():
        print(f"{name:40s} median {med[name]:6.2f} s   ({', '.join(f'{t:.2f}' for t in v)})")
    names = list(cases)
    print(f"torchvision / image_folder: {med[names[2]] / med[names[0]]:.2f}x; "
          f"all / n_per_class=100: {med[names[0]] / med[names[1]]:.1f}x; "
          f"loadtxt / pixel_csv: {med[names[4]] / med[names[3]]:.2f}x")


if __name__ == "__main__":
    main()
