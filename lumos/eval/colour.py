"""Does a variation keep its input's colours? Colour-distribution distances (issue 15).

Beyond the paper. A mini-world scene is a flat or textured background with a few palette-coloured
shapes, so its colour histogram says most of what a variation should keep: an I2I model that
learned anything from its condition makes samples whose colours are closer to their own input's
than to other inputs'. The distance is the earth mover's (Wasserstein-1) distance between the
two images' histograms of each RGB channel, averaged over channels: a colour shift of d costs d,
so a slightly off background is near, another background far (hard bins would flip on the
mini-world's mid-grey 128). Images are (N,3,H,W) in [0, 1], all of one size.

    colour_distance(a, b)                -> (N,) in [0, 1]
    colour_quantiles(images, q)          -> (N,3,q): what the distance needs, kept per batch
    variation_distances(inputs, samples) -> {"to_input", "to_other", "ratio"} (images or quantiles)
"""

from __future__ import annotations

import torch


def _sorted_channels(images: torch.Tensor) -> torch.Tensor:
    if images.ndim == 3 and images.shape[1] == 3:  # already quantiles (colour_quantiles)
        return images
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N,3,H,W) images or (N,3,q) quantiles, got {tuple(images.shape)}")
    return images.clamp(0, 1).flatten(2).sort(-1).values  # (N,3,H*W): each channel's quantiles


def colour_quantiles(images: torch.Tensor, q: int = 256) -> torch.Tensor:
    """(N,3,q) evenly spaced quantiles of each channel: the W1 distance of two images is the mean
    |difference| of these, so a batched evaluation keeps q values per channel, not the images."""
    ranked = _sorted_channels(images.float())
    idx = torch.linspace(0, ranked.shape[-1] - 1, q).round().long()
    return ranked[..., idx]


def colour_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-channel 1-D Wasserstein-1 distance of pixel values (mean |quantile difference|), averaged
    over RGB; ``a`` and ``b`` broadcast over their leading (N) dimension."""
    return (_sorted_channels(a) - _sorted_channels(b)).abs().mean((-1, -2))


def variation_distances(inputs: torch.Tensor, samples: torch.Tensor) -> dict[str, float]:
    """``samples`` (N*V,3,H,W): V variations per input, in input order. ``to_input``: mean distance
    of a variation to its own input; ``to_other``: to every other input (random pairs);
    ``ratio``: to_input / to_other (about 1: the condition is ignored; << 1: colours are kept)."""
    n = len(inputs)
    if n < 2 or len(samples) % n:
        raise ValueError(f"need >= 2 inputs and V variations each, got {n} inputs, {len(samples)} samples")
    q_in, q_s = _sorted_channels(inputs), _sorted_channels(samples)
    v = len(samples) // n
    d = (q_s.view(n, v, 1, *q_s.shape[1:]) - q_in[None, None]).abs().mean((-1, -2))  # (n, V, n)
    own = torch.eye(n, dtype=torch.bool)[:, None].expand_as(d)
    to_input, to_other = float(d[own].mean()), float(d[~own].mean())
    return {"to_input": to_input, "to_other": to_other, "ratio": to_input / max(to_other, 1e-8)}
