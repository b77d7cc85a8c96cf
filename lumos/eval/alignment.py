"""Mini-world text-image alignment: an offline, detector-free cousin of GenEval (Table 3).

Beyond the paper. A mini-world caption is written from scene parameters (lumos.demo.scenes):
1-4 shapes, each alone in a cell of a 3x3 grid, in one of eight palette colours, on a
(possibly textured) background. A T2I sample for that caption is checked against the
parameters by colour alone, so no detector weights are needed:

* the image (any size) is reduced to ``cell_px`` x ``cell_px`` pixels per cell (box filter);
* a pixel *has* palette colour c when c is its nearest palette colour and lies within
  ``tolerance`` (RGB distance); backgrounds, their textures and blended edges stay outside;
* a cell holds a blob of c when at least ``min_fraction`` of its pixels have c.

Per image::

    count     1.0 if the number of cells holding any blob equals the number of shapes, else 0.0
    colour    fraction of shapes whose colour appears in some cell
    position  fraction of shapes whose colour appears in their own cell
    overall   mean of the three;  exact: all three are 1

Public functions::

    detect_cells(image, tolerance=60.0, min_fraction=0.01, cell_px=32) -> list[list[set[str]]]
    alignment_score(image, scene, ...) -> {"count", "colour", "position", "overall", "exact"}
    alignment_scores(images, scenes, ...) -> {"count", "colour", "position", "overall", "exact",
                                              "n", "per_image": [...]}

``scene``: the dict of ``images/<key>.json`` (or ``Scene.to_dict()``, or a ``Scene``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from lumos.demo.scenes import COLOURS, Scene

_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _NAMES], dtype=np.float32)  # (K, 3)


def _as_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:  # (3, H, W) tensor layout
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def detect_cells(image, tolerance: float = 60.0, min_fraction: float = 0.01,
                 cell_px: int = 32) -> list[list[set[str]]]:
    """The palette colours with a blob in each grid cell: ``cells[row][col]`` is a set of names."""
    small = np.asarray(_as_pil(image).resize((3 * cell_px, 3 * cell_px), Image.Resampling.BOX),
                       dtype=np.float32)
    dist = np.linalg.norm(small[:, :, None, :] - _PALETTE[None, None], axis=-1)  # (H, W, K)
    nearest = dist.argmin(-1)
    has = np.where(dist.min(-1) <= tolerance, nearest, -1)
    cells = []
    for r in range(3):
        row = []
        for c in range(3):
            block = has[r * cell_px:(r + 1) * cell_px, c * cell_px:(c + 1) * cell_px]
            counts = np.bincount(block[block >= 0], minlength=len(_NAMES))
            row.append({_NAMES[k] for k in np.flatnonzero(counts >= min_fraction * block.size)})
        cells.append(row)
    return cells


def _shapes(scene) -> list[dict]:
    if isinstance(scene, Scene):
        scene = scene.to_dict()
    return list(scene["shapes"])


def alignment_score(image, scene, tolerance: float = 60.0, min_fraction: float = 0.01,
                    cell_px: int = 32) -> dict:
    """Count, colour and position agreement of one image with its scene parameters."""
    shapes = _shapes(scene)
    if not shapes:
        raise ValueError("scene has no shapes")
    cells = detect_cells(image, tolerance, min_fraction, cell_px)
    found = set().union(*(s for row in cells for s in row))
    occupied = sum(bool(s) for row in cells for s in row)
    count = float(occupied == len(shapes))
    colour = float(np.mean([s["colour"] in found for s in shapes]))
    position = float(np.mean([s["colour"] in cells[s["row"]][s["col"]] for s in shapes]))
    overall = (count + colour + position) / 3
    return {"count": count, "colour": colour, "position": position, "overall": overall,
            "exact": float(overall == 1.0)}


def alignment_scores(images: Sequence, scenes: Sequence, tolerance: float = 60.0,
                     min_fraction: float = 0.01, cell_px: int = 32) -> dict:
    """Per-image scores and their means (the aggregate a report shows)."""
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
    if not len(images):
        raise ValueError("no images")
    per = [alignment_score(im, sc, tolerance, min_fraction, cell_px) for im, sc in zip(images, scenes)]
    keys = ("count", "colour", "position", "overall", "exact")
    return {k: float(np.mean([p[k] for p in per])) for k in keys} | {"n": len(per), "per_image": per}
