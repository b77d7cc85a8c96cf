"""Does a novel view show the object? A foreground-mask IoU (issue 15; beyond the paper).

An NVS render is one object on a flat background (white, as Zero-1-to-3). A generated view's
background need not be that exact colour (the tiny VAE shifts colours), so each image's own
background is estimated from its border (the per-channel median of the outermost pixels) and
a pixel is foreground when any channel differs from it by more than ``threshold``. The IoU of a
generated view's mask with the true render's mask is 0 for a background-only image and about 1
for a view that draws the object's silhouette where the render has it. Images are (N,3,H,W) in
[0, 1].

    foreground_mask(images, threshold)        -> (N,H,W) bool
    foreground_iou(generated, true, threshold) -> (N,) in [0, 1]
"""

from __future__ import annotations

import torch

THRESHOLD = 0.1  # a tenth of the colour range: above the VAE's ripples on a flat background


def _check(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N,3,H,W) images, got {tuple(images.shape)}")


def foreground_mask(images: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """Pixels that differ from the image's border colour (its background) by > ``threshold``."""
    _check(images)
    x = images.float()
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)  # (N,3,4R)
    background = border.median(dim=-1).values[..., None, None]
    return (x - background).abs().amax(dim=1) > threshold


def foreground_iou(generated: torch.Tensor, true: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """Per image: |gen mask & true mask| / |gen mask | true mask| (1 when both are empty)."""
    if generated.shape != true.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and true {tuple(true.shape)} views differ in shape")
    g, t = foreground_mask(generated, threshold), foreground_mask(true, threshold)
    union = (g | t).sum((1, 2))
    return torch.where(union > 0, (g & t).sum((1, 2)) / union.clamp_min(1), torch.ones_like(union, dtype=torch.float))
