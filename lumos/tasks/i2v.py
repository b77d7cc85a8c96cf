"""Lumos-I2V (supplement H.4, eq. S2): the I2I DiT per frame plus zero-initialised temporal
attention. Mask strategy: the first frame's latent stays clean and gets timestep 0, the other
frames are noised; the loss counts only the noised frames. The first frame's encoder tokens
condition every frame through cross-attention (the I2I control is kept)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lumos.models import VideoDiT
from lumos.tasks.transfer import TransferTask


def first_frame_clean(z0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame 0 of (B,F,...) latents replaced by its clean latent, its timestep set to 0."""
    z_t, t = z_t.clone(), t.clone()
    z_t[:, 0] = z0[:, 0]
    t[:, 0] = 0
    return z_t, t


@dataclass
class I2VTask(TransferTask):
    name: str = "i2v"
    model_class: str = "video"

    def loss(self, forward: nn.Module, model: VideoDiT, batch: dict[str, torch.Tensor],
             generator: torch.Generator) -> torch.Tensor:
        mean, std = batch["latent_mean"], batch["latent_std"]  # (B, F, C, h, w)
        b, f = mean.shape[:2]
        z0 = mean + std * torch.randn(mean.shape, generator=generator).to(mean)
        t = torch.randint(0, self.diffusion.steps, (b,), generator=generator).to(mean.device)
        t = t[:, None].expand(b, f)
        noise = torch.randn(mean.shape, generator=generator).to(mean)
        z_t = self.diffusion.train_scheduler.add_noise(z0.flatten(0, 1), noise.flatten(0, 1),
                                                       t.flatten()).view_as(z0)
        z_t, t = first_frame_clean(z0, z_t, t)
        drop = (torch.rand(b, generator=generator) < self.condition_dropout).to(mean.device)
        cond = model.drop_condition(batch["condition"], drop)
        out = forward(z_t, t, cond)
        later = lambda x: x[:, 1:].flatten(0, 1)  # noqa: E731  frame 0 is given, not predicted
        return self.diffusion.per_sample_loss(later(out), later(z0), later(z_t), later(t), later(noise)).mean()
