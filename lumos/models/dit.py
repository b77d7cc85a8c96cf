"""The denoiser eps_theta of eq. (1): a DiT whose blocks cross-attend to condition tokens.

diffusers' `PixArtTransformer2DModel` is DiT + cross-attention + adaLN-single; its
`caption_channels` is the condition width, so the same class takes DINO tokens (I2I) and T5
tokens (T2I). Condition dropout swaps a sample's tokens for a learned null condition, which is
what classifier-free guidance samples against (paper Fig. 12).
"""

from __future__ import annotations

import torch
from diffusers import PixArtTransformer2DModel
from torch import nn

# DiT's named sizes (Peebles & Xie, Table 1) with patch size 2; `tiny` is the CPU stand-in.
VARIANTS: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16, "patch_size": 2},
    "B/2": {"num_layers": 12, "num_attention_heads": 12, "attention_head_dim": 64, "patch_size": 2},
    "L/2": {"num_layers": 24, "num_attention_heads": 16, "attention_head_dim": 64, "patch_size": 2},
    "XL/2": {"num_layers": 28, "num_attention_heads": 16, "attention_head_dim": 72, "patch_size": 2},
}


class ConditionedDiT(nn.Module):
    """PixArt DiT predicting epsilon from (z_t, t, condition tokens), with a learned null condition."""

    def __init__(self, variant: str, latent_channels: int, latent_size: int, condition_dim: int,
                 condition_tokens: int, gradient_checkpointing: bool = False,
                 input_channels: int | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise KeyError(f"unknown model variant {variant!r}; known: {sorted(VARIANTS)}")
        spec = VARIANTS[variant]
        inner = spec["num_attention_heads"] * spec["attention_head_dim"]
        self.width, self.heads, self.head_dim = inner, spec["num_attention_heads"], spec["attention_head_dim"]
        self.transformer = PixArtTransformer2DModel(
            **spec,
            in_channels=input_channels or latent_channels,  # NVS concatenates the input view's latent
            out_channels=latent_channels,  # epsilon only (eq. 1), no learned variance
            sample_size=latent_size,
            cross_attention_dim=inner,
            caption_channels=condition_dim,
            norm_type="ada_norm_single",
            use_additional_conditions=False,
        )
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.null_condition = nn.Parameter(torch.randn(condition_tokens, condition_dim) / condition_dim**0.5)
        self.variant = variant

    def drop_condition(self, condition: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Replace the conditions of the samples where ``drop`` (B,) is True by the null one."""
        null = self.null_condition.to(condition.dtype).expand_as(condition)
        return torch.where(drop[:, None, None], null, condition)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor,
                condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,C,h,w) noisy latents, (B,) timesteps, (B,M,d) tokens [, (B,M) mask: 1 keep, 0 pad]
        -> (B,C,h,w) predicted noise. Any h, w divisible by the patch size (multi-aspect T2I)."""
        return self.transformer(z_t, encoder_hidden_states=condition, timestep=t,
                                encoder_attention_mask=condition_mask, return_dict=False)[0]

    def null(self, batch: int) -> torch.Tensor:
        return self.null_condition[None].expand(batch, -1, -1)


# The condition projection: what an I2I <-> T2I transfer re-initialises (it maps the encoder's
# width into the DiT, so it cannot carry over between DINO and T5 tokens; section 3.2).
CONDITION_PARAMETERS = ("transformer.caption_projection.", "null_condition")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
