"""Lumos-T2I sampling: prompts -> images with classifier-free guidance (against the learned null
condition with a full mask), at any bucket's aspect ratio."""

from __future__ import annotations

import torch

from lumos.config import Diffusion
from lumos.diffusion import GaussianDiffusion
from lumos.models import ConditionedDiT


@torch.no_grad()
def text_to_image(model: ConditionedDiT, vae, text_encoder, prompts: list[str], height: int, width: int,
                  settings: Diffusion, seed: int) -> torch.Tensor:
    """(len(prompts), 3, height, width) images in [0, 1]."""
    emb, mask = text_encoder(prompts)
    emb = emb.float()
    n = len(prompts)
    f = vae.downsample
    shape = (n, vae.latent_channels, height // f, width // f)
    z = GaussianDiffusion(settings.train_steps).sample(
        model, emb, model.null(n), shape, settings.sampler, settings.sample_steps, settings.cfg_scale,
        torch.Generator().manual_seed(seed), model_kwargs={"condition_mask": mask},
        null_kwargs={"condition_mask": torch.ones_like(mask)})
    return (vae.decode(z).clamp(-1, 1) + 1) / 2
