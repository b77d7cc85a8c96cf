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
def i2i_batch_features(model, vae, encoder, extractor: torch.nn.Module, paths: Sequence[Path | str],
                       resolution: int, diffusion: Diffusion, seed: int, batch_size: int) -> dict[str, torch.Tensor]:
    """One batch of Table 1's protocol (a generation unit): ``generated``/``reference`` features
    (n, D) and each side's colour quantiles ``q_generated``/``q_reference`` (n,3,q), noise from ``seed``."""
    from lumos.eval.colour import colour_quantiles
    from lumos.sample.i2i import variations

    images = [_load_rgb(p) for p in paths]
    grid = variations(model, vae, encoder, images, 1, resolution, diffusion, seed).float().cpu()
    return {"generated": extract_features(to_uint8(grid[1::2]), extractor, batch_size),  # rows of [input, sample]
            "reference": extract_features(to_uint8(grid[0::2]), extractor, batch_size),
            "q_generated": colour_quantiles(grid[1::2]), "q_reference": colour_quantiles(grid[0::2])}


def i2i_batches(paths: Sequence[Path | str], batch_size: int, seed: int) -> list[tuple[int, list, int]]:
    """(batch index, paths, seed) of each batch: batch ``b`` draws its noise from ``seed + b``."""
    if not paths:
        raise ValueError("no reference images to evaluate on")
    return [(b, list(paths[start: start + batch_size]), seed + b)
            for b, start in enumerate(range(0, len(paths), batch_size))]


def merge_i2i(results: Sequence[dict], colours: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches' results (in batch order) -> (generated, reference) features; colours as below."""
    if colours is not None:
        colours["generated"] = torch.cat([r["q_generated"] for r in results])
        colours["reference"] = torch.cat([r["q_reference"] for r in results])
    return torch.cat([r["generated"] for r in results]), torch.cat([r["reference"] for r in results])


@torch.no_grad()
def i2i_variation_features(model, vae, encoder, extractor: torch.nn.Module, paths: Sequence[Path | str],
                           resolution: int, diffusion: Diffusion, seed: int, batch_size: int,
                           colours: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(generated, reference) features (N, D) of one I2I variation per image (Table 1's protocol),
    ``batch_size`` images at a time; the reference is the square-cropped input the model saw.
    ``colours``: a dict that receives each side's colour quantiles (N,3,q) (lumos/eval/colour.py).
    In this process; evaluate-i2i runs the same batches as generation units (lumos/eval/generation.py)."""
    results = [i2i_batch_features(model, vae, encoder, extractor, batch, resolution, diffusion, s, batch_size)
               for _, batch, s in i2i_batches(paths, batch_size, seed)]
    return merge_i2i(results, colours)
