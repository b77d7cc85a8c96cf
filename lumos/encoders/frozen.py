"""What every frozen encoder shares: no gradients, always in eval mode, seeded tiny builds.

Both the autoencoder E and the image encoder tau_img "remain frozen throughout the
pre-training process" (paper 3.1, eq. 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M")


class Frozen(nn.Module):
    """An ``nn.Module`` whose parameters never need grad and which ignores ``.train()``."""

    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Frozen:  # noqa: ARG002 - frozen: always eval
        """Stay in eval mode (no dropout, fixed norms) even inside a model being trained."""
        return super().train(False)


def seeded(build: Callable[[], M], seed: int = 0) -> M:
    """Run ``build`` under ``torch.manual_seed(seed)`` without touching the caller's RNG state,
    so a random (tiny) model is the same in every run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def check_images(images: torch.Tensor, low: float, high: float, tol: float = 1e-2) -> None:
    """Reject a wrong layout or value range (e.g. [0,1] pixels given where [-1,1] is expected)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B,3,H,W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected float images, got {images.dtype}")
    lo, hi = torch.aminmax(images.detach())
    if lo.item() < low - tol or hi.item() > high + tol:
        raise ValueError(
            f"expected images in [{low}, {high}], got values in [{lo.item():.3f}, {hi.item():.3f}]")
