"""The noise process (DDPM, eq. 1) and samplers with classifier-free guidance."""

from lumos.diffusion.process import GaussianDiffusion, epsilon_half

__all__ = ["GaussianDiffusion", "epsilon_half"]
