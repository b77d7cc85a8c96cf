"""Evaluation in bounded batches: generate and extract features ``batch_size`` images at a time,
so memory is bounded by the batch, never by the protocol's sample count (30 000 for Table 1).

Only the (N, D) features are kept (what FID/KID need); images are read, varied, measured and
dropped one batch after another. Batch ``b`` draws its noise from ``seed + b``: the tiny
protocols (samples <= batch size) give the same numbers as one batch of everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from lumos.config import Diffusion
from lumos.eval.features import extract_features
from lumos.eval.image_metrics import to_uint8


def _load_rgb(path: Path | str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


@torch.no_grad()
def i2i_variation_features(model, vae, encoder, extractor: torch.nn.Module, paths: Sequence[Path | str],
                           resolution: int, diffusion: Diffusion, seed: int, batch_size: int,
                           colours: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(generated, reference) features (N, D) of one I2I variation per image (Table 1's protocol),
    ``batch_size`` images at a time; the reference is the square-cropped input the model saw.
    ``colours``: a dict that receives each side's colour quantiles (N,3,q) (lumos/eval/colour.py)."""
    from lumos.eval.colour import colour_quantiles
    from lumos.sample.i2i import variations

    if not paths:
        raise ValueError("no reference images to evaluate on")
    generated, reference, q_gen, q_ref = [], [], [], []
    for b, start in enumerate(range(0, len(paths), batch_size)):
        images = [_load_rgb(p) for p in paths[start: start + batch_size]]
        grid = variations(model, vae, encoder, images, 1, resolution, diffusion, seed + b)
        generated.append(extract_features(to_uint8(grid[1::2]), extractor, batch_size))  # rows of [input, sample]
        reference.append(extract_features(to_uint8(grid[0::2]), extractor, batch_size))
        if colours is not None:
            q_gen.append(colour_quantiles(grid[1::2]))
            q_ref.append(colour_quantiles(grid[0::2]))
    if colours is not None:
        colours["generated"], colours["reference"] = torch.cat(q_gen), torch.cat(q_ref)
    return torch.cat(generated), torch.cat(reference)
