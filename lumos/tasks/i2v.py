"""Lumos-I2V (supplement H.4, eq. S2): the I2I DiT per frame plus zero-initialised temporal
attention. Mask strategy: the first frame's latent stays clean and gets timestep 0, the other
frames are noised; the loss counts only the noised frames. The first frame's encoder tokens
condition every frame through cross-attention (the I2I control is kept)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lumos.data.features import FeatureShards
from lumos.diffusion import GaussianDiffusion
from lumos.models import VideoDiT
from lumos.tasks.priors import init_from


def first_frame_clean(z0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame 0 of (B,F,...) latents replaced by its clean latent, its timestep set to 0."""
    z_t, t = z_t.clone(), t.clone()
    z_t[:, 0] = z0[:, 0]
    t[:, 0] = 0
    return z_t, t


@dataclass
class I2VTask:
    data: FeatureShards
    model_args: dict
    parent: Path | None
    condition_dropout: float
    diffusion: GaussianDiffusion
    name: str = "i2v"
    transfer: dict = field(default_factory=dict)

    def build_model(self) -> VideoDiT:
        model = VideoDiT(**self.model_args)
        self.transfer = init_from(model, self.parent, condition="vision")
        return model

    def num_samples(self) -> int:
        return len(self.data)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.data.batch(indices)

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
        eps = forward(z_t, t, cond)
        return F.mse_loss(eps[:, 1:].float(), noise[:, 1:].float())  # frame 0 is given, not predicted
