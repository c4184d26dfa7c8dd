"""Reading images: raster files of the :data:`IMAGE_FORMATS`, as an RGB ``PIL.Image``, or a typed error.

:func:`load_image` opens regular files only, decodes only the accepted
raster formats (whatever the file is named), applies the EXIF orientation,
converts every mode (``RGB``, ``L``, ``RGBA``, ``LA``, ``P``, ``CMYK``,
``I;16``, ``1``, ``YCbCr`` …) to RGB and refuses images over Pillow's pixel
limit; :func:`iter_image_files` walks directories for image files. Pillow is
imported only when an image is read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: The Pillow formats :func:`load_image` decodes: raster formats only, chosen by content, never by
#: name. Pillow's other plugins stay closed — PostScript/EPS (which runs Ghostscript), PDF, WMF/EMF,
#: PSD, FITS, HDF5 and the rest — so a file named ``.jpg`` holding one of them is refused.
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "TGA", "ICO", "JPEG2000")

#: File suffixes :func:`iter_image_files` picks up when walking a directory.
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k",
)


class ImageError(ValueError):
    """An image that cannot be read or is refused; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# -- reading images -------------------------------------------------------------------


def _to_rgb(img):
    """Any Pillow mode → RGB. Transparent pixels are composited on white."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (or 32-bit int) grey: scale 0..65535 to 0..255; Pillow's own convert clips instead.
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(a / 257.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    if mode == "F":
        a = np.clip(np.asarray(img, dtype=np.float64), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK (Pillow's conversion, no ICC profile), YCbCr, LAB, HSV


def load_image(path: str | os.PathLike):
    """Open ``path`` as an RGB ``PIL.Image``, fully decoded, EXIF orientation applied.

    * Modes: RGB as is; ``L``/``1`` replicated to three channels; ``I;16``
      (16-bit grey) scaled by 1/257 to 8 bits; ``P`` through its palette;
      ``CMYK`` by Pillow's conversion; ``RGBA``/``LA``/``PA`` and palette
      transparency **composited on a white background** (dropping alpha would
      show whatever colours hide under transparent pixels, often black).
      Multi-frame files (GIF, TIFF): the first frame.
    * Decompression bombs: an image with more pixels than Pillow's
      ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 by default, about
      1024 × 1024 × 1024 // 4 // 3) is refused with :class:`ImageError`, checked
      on the header's size before decoding — Pillow itself only warns between 1×
      and 2× that limit. Set ``MAX_IMAGE_PIXELS`` to change the limit.
    * Only regular files are opened (a FIFO or device given as an image is
      refused, never read), and only the raster :data:`IMAGE_FORMATS` are
      decoded, recognised by content; anything else, or a truncated or corrupt
      file, raises :class:`ImageError` with the reason.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as exc:
        raise ImageError(path, f"cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise ImageError(path, "is a directory")
    if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
        raise ImageError(path, "not a regular file (a pipe, socket or device is not read)")
    try:
        # Pillow warns between 1x and 2x its pixel limit and raises above: the size is checked here
        # rather than by turning the warning into an error with warnings.catch_warnings(), which
        # changes the filters of every thread at once (the training loader decodes in threads).
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            pixels = img.size[0] * img.size[1]
            if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{img.size[0]}x{img.size[1]} = {pixels:,} pixels")
            img.load()  # decode now: truncation and corrupt data surface here
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
            rgb.load()
            return rgb
    except Image.DecompressionBombError as exc:
        raise ImageError(
            path,
            f"refused as a possible decompression bomb: {exc} "
            f"(limit PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,} pixels)",
        ) from None
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory") from None
    except PermissionError as exc:
        raise ImageError(path, f"cannot be read: {exc.strerror}") from None
    except UnidentifiedImageError:
        raise ImageError(path, f"not an image in one of the accepted formats ({', '.join(IMAGE_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as exc:
        raise ImageError(path, f"truncated or corrupt image: {exc or type(exc).__name__}") from None


def iter_image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files to classify: each path given as is; directories walked (recursively, sorted) for image suffixes."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
            out.extend(sorted(found))
        else:
            out.append(p)
    return out
