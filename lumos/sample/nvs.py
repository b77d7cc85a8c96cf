"""Lumos-NVS sampling: one input view + target relative poses -> the novel views (eq. S1)."""

from __future__ import annotations

import torch

from lumos.config import Diffusion
from lumos.data.nvs import relative_pose
from lumos.diffusion import GaussianDiffusion
from lumos.models import NVSDiT


@torch.no_grad()
def novel_views(model: NVSDiT, vae, input_latent: torch.Tensor, input_tokens: torch.Tensor,
                w2c_input: torch.Tensor, w2c_targets: torch.Tensor, settings: Diffusion, seed: int,
                batch_size: int = 16) -> torch.Tensor:
    """(C,h,w) input latent, (M,d) its tokens, (4,4) its camera, (N,4,4) target cameras ->
    (N,3,H,W) images in [0, 1]."""
    diffusion = GaussianDiffusion(settings.train_steps)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(w2c_targets), batch_size):
        targets = w2c_targets[i: i + batch_size]
        n = len(targets)
        pose = relative_pose(w2c_input.expand(n, 4, 4), targets)
        cond = input_tokens.expand(n, -1, -1)
        kwargs = {"input_latent": input_latent.expand(n, -1, -1, -1), "pose": pose}
        z = diffusion.sample(model, cond, model.null(n), (n, *input_latent.shape), settings.sampler,
                             settings.sample_steps, settings.cfg_scale, g, model_kwargs=kwargs)
        out.append((vae.decode(z).clamp(-1, 1) + 1) / 2)
    return torch.cat(out)
