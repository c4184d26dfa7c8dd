"""Write scikit-learn's offline handwritten digits as an image folder that ``alexnet-aa train`` and
``alexnet-aa ablate`` read.

``sklearn.datasets.load_digits()`` ships inside the scikit-learn wheel (no download): 1,797 grey
8×8 digits, 10 classes, 16 grey levels. They are written as 8-bit PNGs, one subfolder per digit::

    python examples/digits_folder.py data/digits     # data/digits/0/0000.png … data/digits/9/1796.png
    alexnet-aa ablate data/digits --what relu-vs-tanh --input-size 67 --epochs 8 --out runs/ablate

Needs ``pip install 'alexnet-aa[demo]'`` (scikit-learn) and Pillow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_digits_folder(out: str | Path) -> dict[str, int]:
    """The 1,797 digits under ``out/0`` … ``out/9``; returns the count per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()  # images (1797, 8, 8) with values 0..16
    counts: dict[str, int] = {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = Path(out) / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
        counts[str(label)] = counts.get(str(label), 0) + 1
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the folder to write (0/ … 9/ inside)")
    counts = write_digits_folder(parser.parse_args().out)
    print(", ".join(f"{n} of {name}" for name, n in counts.items()))


if __name__ == "__main__":
    main()
