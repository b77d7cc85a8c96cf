"""Raw/long caption mixing at training time (supplement G.2, after DALL-E 3): each sample takes
its long caption with probability ``long_caption_ratio`` and its raw caption otherwise; a
missing long caption falls back to the raw one, and the fallbacks are counted."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class CaptionMixer:
    long_caption_ratio: float
    drawn_long: int = field(default=0, init=False)
    drawn_raw: int = field(default=0, init=False)
    fallbacks: int = field(default=0, init=False)

    def choose(self, has_long: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) bool: True where the long caption is used (drawn, and present)."""
        want_long = torch.rand(has_long.shape[0], generator=generator) < self.long_caption_ratio
        use_long = want_long & has_long
        self.fallbacks += int((want_long & ~has_long).sum())
        self.drawn_long += int(use_long.sum())
        self.drawn_raw += int((~use_long).sum())
        return use_long

    def mix(self, raw: torch.Tensor, long: torch.Tensor, has_long: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
        """Pick per sample between two batched tensors of the same shape (e.g. T5 embeddings)."""
        use_long = self.choose(has_long, generator)
        return torch.where(use_long.view(-1, *([1] * (raw.ndim - 1))), long, raw)
