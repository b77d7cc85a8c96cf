"""One way to decode an image everywhere: EXIF orientation applied, so sizes and pixels are upright.

A JPEG stored 900x600 with EXIF Orientation 6 is shown (and must be measured and trained on) as
600x900. `score` measures true sizes through :func:`upright`; every later decode of a kept
image (features, captions) goes through :func:`open_upright`.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps


def upright(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF Orientation says (itself when there is none)."""
    return ImageOps.exif_transpose(im)


def open_upright(data: bytes) -> Image.Image:
    """Decode image bytes to an upright RGB image."""
    with Image.open(io.BytesIO(data)) as im:
        return upright(im).convert("RGB")
