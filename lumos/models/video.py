"""The I2V denoiser of eq. (S2): the I2I DiT applied per frame, with a temporal attention layer
after each spatial block (attending across frames at each spatial position).

Each temporal layer's output projection starts at zero, so at step 0 the video model is the
per-frame I2I model. Frames travel as one sequence: (B, F, C, h, w) latents, (B, F) timesteps.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from lumos.models.dit import ConditionedDiT


class TemporalAttention(nn.Module):
    """Pre-norm self-attention over frames with learned frame positions; residual, zero-init out."""

    def __init__(self, width: int, heads: int, head_dim: int, max_frames: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.frame_embedding = nn.Parameter(torch.zeros(max_frames, width))
        self.attention = Attention(query_dim=width, heads=heads, dim_head=head_dim, bias=True)
        nn.init.zeros_(self.attention.to_out[0].weight)
        nn.init.zeros_(self.attention.to_out[0].bias)

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:
        bf, n, d = h.shape
        b = bf // frames
        x = h.view(b, frames, n, d).transpose(1, 2).reshape(b * n, frames, d)
        y = self.attention(self.norm(x + self.frame_embedding[:frames].to(x.dtype)))
        return h + y.view(b, n, frames, d).transpose(1, 2).reshape(bf, n, d)


class _AfterBlock:
    """Forward hook running one temporal layer on a spatial block's output."""

    def __init__(self, owner: VideoDiT, index: int) -> None:
        self.owner, self.index = owner, index

    def __call__(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        return self.owner.temporal[self.index](output, self.owner.frames_in_flight)


class VideoDiT(ConditionedDiT):
    def __init__(self, max_frames: int = 16, **dit_args) -> None:
        super().__init__(**dit_args)
        blocks = self.blocks()
        self.temporal = nn.ModuleList(TemporalAttention(self.width, self.heads, self.head_dim, max_frames)
                                      for _ in blocks)
        self.frames_in_flight = 1
        for i, block in enumerate(blocks):
            block.register_forward_hook(_AfterBlock(self, i))

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor,
                condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,F,C,h,w) latents, (B,F) per-frame timesteps, (B,M,d) first-frame tokens."""
        b, f = z_t.shape[:2]
        self.frames_in_flight = f
        cond = condition.repeat_interleave(f, dim=0)
        mask = None if condition_mask is None else condition_mask.repeat_interleave(f, dim=0)
        out = super().forward(z_t.flatten(0, 1), t.flatten(0, 1), cond, mask)
        return out.view(b, f, *out.shape[1:])
