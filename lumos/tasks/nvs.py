"""Lumos-NVS (supplement H.3, eq. S1): predict a target view's latent from an input view (its
latent concatenated to the noisy target, its tokens through cross-attention) and the relative
camera pose (R, T) added to the timestep embedding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lumos.models import NVSDiT
from lumos.tasks.transfer import TransferTask


@dataclass
class NVSTask(TransferTask):
    name: str = "nvs"
    model_class: str = "nvs"

    def loss(self, forward: nn.Module, model: NVSDiT, batch: dict[str, torch.Tensor],
             generator: torch.Generator) -> torch.Tensor:
        mean, std = batch["latent_mean"], batch["latent_std"]
        z0 = mean + std * torch.randn(mean.shape, generator=generator).to(mean)
        drop = (torch.rand(mean.shape[0], generator=generator) < self.condition_dropout).to(mean.device)
        cond = model.drop_condition(batch["condition"], drop)
        return self.diffusion.loss(forward, z0, cond, generator, input_latent=batch["input_latent"],
                                   pose=batch["pose"])
