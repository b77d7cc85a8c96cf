"""Diffusion backbones: a DiT with cross-attention (diffusers' PixArt transformer)."""

from lumos.models.dit import VARIANTS, ConditionedDiT

__all__ = ["VARIANTS", "ConditionedDiT"]
