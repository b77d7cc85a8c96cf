"""The denoiser eps_theta of eq. (1): a DiT whose blocks cross-attend to condition tokens.

Two backbones behind one interface (``backbone``):
  * ``lumos``: the paper's and the released code's DiT with per-block adaLN-Zero plus
    cross-attention (lumos.models.lumos_dit), the layout of the released checkpoints;
  * ``pixart``: diffusers' `PixArtTransformer2DModel` (DiT + cross-attention + adaLN-single),
    the layout of PixArt-alpha's checkpoints.
Either takes DINO tokens (I2I) or T5 tokens (T2I) through its condition projection, and either
may learn the variance (``learn_sigma``: 2C output channels, IDDPM's hybrid loss; samplers use
the epsilon half). Condition dropout swaps a sample's tokens for a learned null condition, which
is what classifier-free guidance samples against (paper Fig. 12).
"""

from __future__ import annotations

import torch
from diffusers import PixArtTransformer2DModel
from torch import nn

from lumos.models.lumos_dit import LumosTransformer

BACKBONES = ("lumos", "pixart")

# DiT's named sizes (Peebles & Xie, Table 1) with patch size 2; `tiny` is the CPU stand-in.
VARIANTS: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16, "patch_size": 2},
    # 6.5x tiny's parameters: bench/t2i_learning_curve.py's larger model (not used by a profile)
    "small": {"num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 16, "patch_size": 2},
    "B/2": {"num_layers": 12, "num_attention_heads": 12, "attention_head_dim": 64, "patch_size": 2},
    "L/2": {"num_layers": 24, "num_attention_heads": 16, "attention_head_dim": 64, "patch_size": 2},
    "XL/2": {"num_layers": 28, "num_attention_heads": 16, "attention_head_dim": 72, "patch_size": 2},
}


class ConditionedDiT(nn.Module):
    """PixArt DiT predicting epsilon from (z_t, t, condition tokens), with a learned null condition."""

    def __init__(self, variant: str, latent_channels: int, latent_size: int, condition_dim: int,
                 condition_tokens: int, gradient_checkpointing: bool = False,
                 input_channels: int | None = None, backbone: str = "pixart", learn_sigma: bool = False,
                 size_conditioning: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise KeyError(f"unknown model variant {variant!r}; known: {sorted(VARIANTS)}")
        if backbone not in BACKBONES:
            raise KeyError(f"unknown backbone {backbone!r}; known: {list(BACKBONES)}")
        if size_conditioning and backbone != "lumos":
            raise ValueError("size_conditioning (multi-aspect T2I) is a feature of the lumos backbone")
        spec = VARIANTS[variant]
        inner = spec["num_attention_heads"] * spec["attention_head_dim"]
        self.width, self.heads, self.head_dim = inner, spec["num_attention_heads"], spec["attention_head_dim"]
        self.backbone, self.learn_sigma, self.latent_channels = backbone, learn_sigma, latent_channels
        io = {"in_channels": input_channels or latent_channels,  # NVS concatenates the input view's latent
              "out_channels": latent_channels * (2 if learn_sigma else 1),  # [epsilon | variance]
              "sample_size": latent_size, "caption_channels": condition_dim}
        if backbone == "lumos":
            self.transformer = LumosTransformer(**spec, **io, size_conditioning=size_conditioning)
        else:
            self.transformer = PixArtTransformer2DModel(**spec, **io, cross_attention_dim=inner,
                                                        norm_type="ada_norm_single",
                                                        use_additional_conditions=False)
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
        -> (B,C,h,w) predicted noise, or (B,2C,h,w) [noise | variance] when ``learn_sigma``.
        Any h, w divisible by the patch size (multi-aspect T2I)."""
        if self.backbone == "lumos":
            return self.transformer(z_t, t, condition, condition_mask)
        return self.transformer(z_t, encoder_hidden_states=condition, timestep=t,
                                encoder_attention_mask=condition_mask, return_dict=False)[0]

    def timestep_embedder(self) -> nn.Module:
        """The module whose output is the timestep embedding that modulates every block and the
        final layer (where NVS adds its pose embedding)."""
        if self.backbone == "lumos":
            return self.transformer.t_embedder
        return self.transformer.adaln_single.emb

    def blocks(self) -> nn.ModuleList:
        """The spatial transformer blocks, in order (I2V's temporal layers follow each)."""
        if self.backbone == "lumos":
            return self.transformer.blocks
        return self.transformer.transformer_blocks

    def null(self, batch: int) -> torch.Tensor:
        return self.null_condition[None].expand(batch, -1, -1)


# The condition projection: what an I2I <-> T2I transfer re-initialises (it maps the encoder's
# width into the DiT, so it cannot carry over between DINO and T5 tokens; section 3.2).
CONDITION_PARAMETERS = ("transformer.caption_projection.", "transformer.y_embedder.", "null_condition")


def backbone_args(model_cfg) -> dict:
    """The ``model`` params section's architecture choices, as ConditionedDiT arguments."""
    return {"backbone": model_cfg.backbone, "learn_sigma": model_cfg.learn_sigma}


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
