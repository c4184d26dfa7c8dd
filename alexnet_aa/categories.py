"""Class names: ImageNet's 1000, shipped with the package, or a weights file's own list.

:func:`imagenet_categories` are the 1000 ILSVRC-2012 class names
(``data/imagenet_classes.txt``), in the index order of torchvision's
``_IMAGENET_CATEGORIES`` (the order of both torchvision's and BVLC Caffe's
``synset_words.txt`` outputs).

>>> len(imagenet_categories()), imagenet_categories()[281]
(1000, 'tabby')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

from .weights import CATEGORIES_KEY


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet (ILSVRC-2012) class names, index order = torchvision's ``_IMAGENET_CATEGORIES``."""
    text = resources.files("alexnet_aa").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:  # a packaging mistake, not a user error
        raise RuntimeError(f"alexnet_aa/data/imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


def class_names(metadata: Mapping[str, str], num_classes: int) -> list[str]:
    """The names of a head's classes: the weights file's own list (metadata key
    :data:`CATEGORIES_KEY`) when it has one of the right length, else ImageNet's
    for a 1000-class head, else ``class 0``, ``class 1``, …"""
    if CATEGORIES_KEY in metadata:
        try:
            names = json.loads(metadata[CATEGORIES_KEY])
            if isinstance(names, list) and len(names) == num_classes:
                return [str(n) for n in names]
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python's stack
            pass
    if num_classes == 1000:
        return list(imagenet_categories())
    return [f"class {i}" for i in range(num_classes)]
