"""Does a variation keep its input's colours? Colour-histogram distances (issue 15).

Beyond the paper. A mini-world scene is a flat or textured background with a few palette-coloured
shapes, so its joint RGB histogram says most of what a variation should keep: an I2I model that
learned anything from its condition makes samples whose histogram is closer to their own input's
than to other inputs'. Images are (N,3,H,W) in [0, 1].

    colour_histograms(images, bins)     -> (N, bins**3), each row sums to 1
    histogram_distance(a, b)            -> (N,) total variation distance in [0, 1]
    variation_distances(inputs, samples) -> {"to_input", "to_other", "ratio"}
"""

from __future__ import annotations

import torch


def colour_histograms(images: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """Joint RGB histogram of each image, ``bins`` levels per channel, normalised to 1."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N,3,H,W) images, got {tuple(images.shape)}")
    q = (images.clamp(0, 1) * bins).long().clamp_max(bins - 1)  # (N,3,H,W) levels
    index = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    hist = torch.zeros(len(images), bins**3).scatter_add_(1, index.flatten(1), torch.ones(index.flatten(1).shape))
    return hist / hist.sum(1, keepdim=True)


def histogram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation distance between histograms row by row: 0 same colours, 1 disjoint."""
    return 0.5 * (a - b).abs().sum(-1)


def variation_distances(inputs: torch.Tensor, samples: torch.Tensor, bins: int = 4) -> dict[str, float]:
    """``samples`` (N*V,3,H,W): V variations per input, in input order. ``to_input``: mean distance
    of a variation to its own input; ``to_other``: to every other input (random pairs);
    ``ratio``: to_input / to_other (1: the condition is ignored; << 1: colours are kept)."""
    n = len(inputs)
    if n < 2 or len(samples) % n:
        raise ValueError(f"need >= 2 inputs and V variations each, got {n} inputs, {len(samples)} samples")
    h_in = colour_histograms(inputs, bins)
    h_s = colour_histograms(samples, bins).view(n, len(samples) // n, -1)
    d = histogram_distance(h_s[:, :, None], h_in[None, None])  # (n, V, n): variation of i vs input j
    own = torch.eye(n, dtype=torch.bool)[:, None].expand_as(d)
    to_input, to_other = float(d[own].mean()), float(d[~own].mean())
    return {"to_input": to_input, "to_other": to_other, "ratio": to_input / max(to_other, 1e-8)}
