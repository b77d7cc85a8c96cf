"""Lumos-T2I (section 3.2, eq. 2): the I2I DiT re-conditioned on T5 tokens of the captions.

Every I2I weight carries over except the condition projection, re-initialised for T5's width;
captions are mixed raw/long per sample (supplement G.2); condition dropout uses the learned null
condition with a full mask, so CFG samples against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lumos.caption.mixing import CaptionMixer
from lumos.models import ConditionedDiT
from lumos.tasks.transfer import TransferTask


@dataclass
class T2ITask(TransferTask):
    mixer: CaptionMixer = field(kw_only=True)  # raw/long caption mixing (G.2)
    name: str = "t2i"
    condition: str = "text"

    def sample_indices(self, size: int, generator: torch.Generator) -> torch.Tensor:
        return self.data.sample_indices(size, generator)

    def loss(self, forward: nn.Module, model: ConditionedDiT, batch: dict[str, torch.Tensor],
             generator: torch.Generator) -> torch.Tensor:
        mean, std = batch["latent_mean"], batch["latent_std"]
        z0 = mean + std * torch.randn(mean.shape, generator=generator).to(mean)
        has_long = batch["has_long"].cpu().bool()
        use_long = self.mixer.choose(has_long, generator).to(mean.device)
        emb = torch.where(use_long[:, None, None], batch["long_emb"], batch["raw_emb"])
        mask = torch.where(use_long[:, None], batch["long_mask"], batch["raw_mask"])
        drop = (torch.rand(mean.shape[0], generator=generator) < self.condition_dropout).to(mean.device)
        emb = model.drop_condition(emb, drop)
        mask = torch.where(drop[:, None], torch.ones_like(mask), mask)  # the null condition is full length
        return self.diffusion.loss(forward, z0, emb, generator, condition_mask=mask)
