"""Mini-world text-image alignment: a strict, detector-free cousin of GenEval (Table 3).

Beyond the paper. A mini-world caption is written from scene parameters (lumos.demo.scenes):
1-4 shapes, each alone in a cell of a 3x3 grid, one of five kinds in one of eight palette
colours, on a (possibly textured) background whose colours are not in the palette. So the
objects in an image can be found without detector weights:

* the image is brought to the scene's aspect ratio (a square T2I sample is stretched back) and
  scaled so that a grid cell's short side is ``cell_px`` pixels (box filter);
* a pixel *has* palette colour c when c is its nearest palette colour within ``tolerance``
  (RGB distance); backgrounds, their textures and blended edges stay outside;
* an *object* is a 4-connected region of one palette colour covering at least ``min_fraction``
  of a square on a cell's short side (smaller specks are ignored); its *cell* is the cell holding its bounding
  box (None when the box straddles cells), its *kind* comes from its box's aspect ratio, how
  much of the box it fills and how its mass splits between the box's top and bottom halves.

GenEval counts a prompt as correct only when the image holds exactly the objects it names and
nothing more. Per image and tag, with D the detected objects and N the named shapes (multisets)::

    count     |D| == |N|
    colour    colours of D == colours of N
    position  cells of D == cells of N
    shape     kinds of D == kinds of N
    overall   (cell, colour, kind) of D == those of N: every named shape where the caption
              puts it, as the caption describes it, and no other object

Each tag is 0 or 1 per image and averaged over images. Rendered scenes score 1; noise, flat
images, random colour blocks and scenes shown with another scene's caption score near 0
(count alone is right by chance for about a quarter of swapped captions: 1-4 shapes).

Public functions::

    detect_objects(image, aspect=None, tolerance=60.0, min_fraction=0.03, cell_px=32) -> list[dict]
    alignment_score(image, scene, ...)   -> {"count", "colour", "position", "shape", "overall",
                                             "objects": [...]}
    alignment_scores(images, scenes, ...) -> {"count", "colour", "position", "shape", "overall",
                                              "n", "per_image": [...]}

``scene``: the dict of ``images/<key>.json`` (or ``Scene.to_dict()``, or a ``Scene``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from lumos.demo.scenes import COLOURS, Scene

TAGS = ("count", "colour", "position", "shape", "overall")
_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _NAMES], dtype=np.float32)  # (K, 3)
_SLACK = 0.1  # of a cell's side: how far an object's box may poke out of its cell


def _as_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:  # (3, H, W) tensor layout
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def _analysis_image(image, aspect: float | None, cell_px: int) -> np.ndarray:
    """(H, W, 3) float pixels at the scene's aspect ratio (width / height), cells ``cell_px`` short."""
    img = _as_pil(image)
    aspect = img.width / img.height if aspect is None else aspect
    w, h = (3 * cell_px * aspect, 3 * cell_px) if aspect >= 1 else (3 * cell_px, 3 * cell_px / aspect)
    return np.asarray(img.resize((max(3, round(w)), max(3, round(h))), Image.Resampling.BOX), dtype=np.float32)


def _kind(mask: np.ndarray) -> str:
    """Classify one object's mask (cropped to its box) as a mini-world shape kind."""
    h, w = mask.shape
    if max(h, w) / min(h, w) > 1.5:
        return "ellipse"  # the only elongated kind (2:1)
    k = max(1, round(0.2 * min(h, w)))  # corner zones: full for a square, empty for round shapes
    corners = np.mean([mask[:k, :k].mean(), mask[:k, -k:].mean(), mask[-k:, :k].mean(), mask[-k:, -k:].mean()])
    if corners >= 0.6:
        return "square"
    if mask.mean() >= 0.65:
        return "circle"  # fills pi/4 = 0.785 of its box; triangles and diamonds 1/2
    top = mask[: h // 2].sum() + (mask[h // 2].sum() / 2 if h % 2 else 0)
    return "triangle" if top / mask.sum() < 0.375 else "diamond"  # top half: 1/4 vs 1/2 of the mass


def detect_objects(image, aspect: float | None = None, tolerance: float = 60.0, min_fraction: float = 0.03,
                   cell_px: int = 32) -> list[dict]:
    """The palette-coloured objects of an image: ``{"colour", "kind", "row", "col"}`` each
    (row/col None when the object does not fit in one grid cell)."""
    px = _analysis_image(image, aspect, cell_px)
    H, W = px.shape[:2]
    ch, cw = H / 3, W / 3
    dist = np.linalg.norm(px[:, :, None, :] - _PALETTE[None, None], axis=-1)  # (H, W, K)
    has = np.where(dist.min(-1) <= tolerance, dist.argmin(-1), -1)
    min_px = min_fraction * min(ch, cw) ** 2  # the smallest shape, a small ellipse, is 0.08

    def cell(box) -> tuple[int, int] | None:
        (y0, y1), (x0, x1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
        row, col = int((y0 + y1) / 2 // ch), int((x0 + x1) / 2 // cw)
        inside = (y0 >= (row - _SLACK) * ch and y1 <= (row + 1 + _SLACK) * ch
                  and x0 >= (col - _SLACK) * cw and x1 <= (col + 1 + _SLACK) * cw)
        return (row, col) if inside else None

    objects = []
    for k, name in enumerate(_NAMES):
        labels, _ = ndimage.label(has == k)
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            if (labels[box] == i).sum() < min_px:
                continue
            if cell(box):
                objects.append(_object(name, labels[box] == i, *cell(box)))
                continue
            mask = labels == i
            # straddles cells: same-coloured shapes in neighbouring cells touching at a point
            # (large circles do) are cut apart along the grid; a flat area or a colour block
            # leaves pieces pressed along the cut, which belong to no cell
            ys = [round(r * ch) for r in range(4)]
            xs = [round(c * cw) for c in range(4)]
            across_rows = mask[:-1] & mask[1:]  # [y]: pixel y and y + 1 both in the region
            across_cols = mask[:, :-1] & mask[:, 1:]
            for r in range(3):
                for c in range(3):
                    piece = mask[ys[r]:ys[r + 1], xs[c]:xs[c + 1]]
                    if piece.sum() < min_px:
                        continue
                    cuts = [across_rows[y - 1, xs[c]:xs[c + 1]].sum() for y in (ys[r], ys[r + 1]) if 0 < y < H]
                    cuts += [across_cols[ys[r]:ys[r + 1], x - 1].sum() for x in (xs[c], xs[c + 1]) if 0 < x < W]
                    pressed = max(cuts, default=0) > 0.5 * min(ch, cw)  # a point contact vs. a side
                    objects.append(_object(name, piece[ndimage.find_objects(piece.astype(np.int32))[0]],
                                           None if pressed else r, None if pressed else c))
    return objects


def _object(colour: str, mask: np.ndarray, row: int | None, col: int | None) -> dict:
    return {"colour": colour, "kind": _kind(mask), "row": row, "col": col}


def _scene_dict(scene) -> dict:
    return scene.to_dict() if isinstance(scene, Scene) else scene


def alignment_score(image, scene, tolerance: float = 60.0, min_fraction: float = 0.03,
                    cell_px: int = 32) -> dict:
    """Strict per-tag agreement (0/1 each) of one image with its scene parameters."""
    scene = _scene_dict(scene)
    named = list(scene["shapes"])
    if not named:
        raise ValueError("scene has no shapes")
    found = detect_objects(image, scene["width"] / scene["height"], tolerance, min_fraction, cell_px)

    def same(*fields) -> float:
        return float(Counter(tuple(o[f] for f in fields) for o in found)
                     == Counter(tuple(s[f] for f in fields) for s in named))

    return {"count": float(len(found) == len(named)), "colour": same("colour"), "position": same("row", "col"),
            "shape": same("kind"), "overall": same("row", "col", "colour", "kind"), "objects": found}


def alignment_scores(images: Sequence, scenes: Sequence, tolerance: float = 60.0,
                     min_fraction: float = 0.03, cell_px: int = 32) -> dict:
    """Per-image scores and each tag's mean over images (what the report's Table 3 shows)."""
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
    if not len(images):
        raise ValueError("no images")
    per = [alignment_score(im, sc, tolerance, min_fraction, cell_px) for im, sc in zip(images, scenes)]
    return {k: float(np.mean([p[k] for p in per])) for k in TAGS} | {"n": len(per), "per_image": per}
