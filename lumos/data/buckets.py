"""Aspect-ratio buckets for multi-scale T2I training (Table S1's last stage).

The table is PixArt-alpha's (diffusers' ``ASPECT_RATIO_*_BIN``: height/width ratio ->
[height, width] with about base^2 pixels); for other base sizes the 1024 table is scaled and
rounded to what the VAE and patch size can take. Lumina-mGPT buckets the same way (by area).
"""

from __future__ import annotations

import math

from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
    ASPECT_RATIO_256_BIN,
    ASPECT_RATIO_512_BIN,
    ASPECT_RATIO_1024_BIN,
)

_PIXART = {256: ASPECT_RATIO_256_BIN, 512: ASPECT_RATIO_512_BIN, 1024: ASPECT_RATIO_1024_BIN}


def bucket_table(base: int, multiple: int = 16) -> list[tuple[int, int]]:
    """[(height, width)] for a base resolution, each side a positive multiple of ``multiple``."""
    if base in _PIXART and all(int(h) % multiple == 0 and int(w) % multiple == 0
                               for h, w in _PIXART[base].values()):
        sizes = [(int(h), int(w)) for h, w in _PIXART[base].values()]
    else:
        scale = base / 1024
        sizes = [(max(multiple, round(h * scale / multiple) * multiple),
                  max(multiple, round(w * scale / multiple) * multiple))
                 for h, w in ASPECT_RATIO_1024_BIN.values()]
    return sorted(set(sizes), key=lambda hw: hw[0] / hw[1])


def nearest_bucket(height: int, width: int, table: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to the image's (in log ratio)."""
    r = math.log(height / width)
    return min(table, key=lambda hw: abs(math.log(hw[0] / hw[1]) - r))
