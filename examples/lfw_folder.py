"""Write scikit-image's offline face photos as an image folder that ``alexnet-aa train`` reads.

``skimage.data.lfw_subset()`` ships inside the scikit-image wheel (no download): 200 grey 25×25
crops from Labeled Faces in the Wild, the first 100 faces and the last 100 not faces. They are
written as 8-bit PNGs, one subfolder per class::

    python examples/lfw_folder.py data/lfw          # data/lfw/face/000.png … data/lfw/non_face/099.png
    alexnet-aa train data/lfw --variant torchvision --input-size 64 --init he --lr 1e-4 --epochs 20 \\
        --val-split 0.2 --out runs/lfw.safetensors

Needs ``pip install 'alexnet-aa[demo]'`` (scikit-image) and Pillow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_lfw_folder(out: str | Path) -> dict[str, int]:
    """The 200 photos under ``out/face`` and ``out/non_face``; returns the count per class."""
    from PIL import Image
    from skimage import data

    photos = data.lfw_subset()  # (200, 25, 25) float64 in [0, 1]: 100 faces, then 100 non-faces
    if photos.shape[0] != 200:
        raise RuntimeError(f"scikit-image's lfw_subset has {photos.shape[0]} photos, expected 200")
    counts = {}
    for name, group in (("face", photos[:100]), ("non_face", photos[100:])):
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, photo in enumerate(group):
            Image.fromarray(np.round(photo * 255).astype(np.uint8), mode="L").save(folder / f"{i:03d}.png")
        counts[name] = len(group)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the folder to write (face/ and non_face/ inside)")
    counts = write_lfw_folder(parser.parse_args().out)
    print(", ".join(f"{n} {name}" for name, n in counts.items()))


if __name__ == "__main__":
    main()
