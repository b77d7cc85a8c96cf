"""Lumos-I2I (section 3.1, eq. 1): generate an image's latent from its frozen encoder tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lumos.data.features import FeatureShards
from lumos.data.stream import FeatureStream
from lumos.diffusion import GaussianDiffusion
from lumos.models import ConditionedDiT
from lumos.tasks.i2i_conditions import condition_tokens


@dataclass
class I2ITask:
    """Data: cached (latent mean, latent std, condition tokens); model: the DiT of eq. (1)."""

    data: FeatureShards | FeatureStream  # in memory (sampling, tests) or streamed (training)
    variant: str
    condition_dropout: float
    diffusion: GaussianDiffusion
    gradient_checkpointing: bool = False
    name: str = "i2i"
    architecture: dict = field(default_factory=dict)  # backbone, learn_sigma (lumos.models.backbone_args)
    condition: str = "image"  # Fig. 8: image | class | none (lumos.tasks.i2i_conditions)
    num_classes: int = 0  # condition: class

    def model_args(self) -> dict:
        """ConditionedDiT's arguments, sized from the cached features (saved with checkpoints)."""
        mean, cond = self.data.shapes["latent_mean"], self.data.shapes["condition"]
        if self.condition == "class":
            cond = (1, self.num_classes)  # one-hot token: the projection is a label embedding
        return {"variant": self.variant, "latent_channels": mean[0], "latent_size": mean[-1],
                "condition_dim": cond[-1], "condition_tokens": cond[0],
                "gradient_checkpointing": self.gradient_checkpointing, **self.architecture}

    def build_model(self) -> ConditionedDiT:
        return ConditionedDiT(**self.model_args())

    def num_samples(self) -> int:
        return len(self.data)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.data.batch(indices)

    def loss(self, forward: nn.Module, model: ConditionedDiT, batch: dict[str, torch.Tensor],
             generator: torch.Generator) -> torch.Tensor:
        mean, std = batch["latent_mean"], batch["latent_std"]
        cond = condition_tokens(self.condition, batch, self.num_classes)
        z0 = mean + std * torch.randn(mean.shape, generator=generator).to(mean)  # a posterior sample
        drop = torch.rand(mean.shape[0], generator=generator) < self.condition_dropout
        if self.condition == "none":  # unconditional: always the learned null condition
            drop = torch.ones_like(drop)
        cond = model.drop_condition(cond, drop.to(cond.device))
        return self.diffusion.loss(forward, z0, cond, generator)
