"""What the three transfer tasks share (section 3.2): a model of a registered class built from
its arguments and initialised from a parent checkpoint (lumos.tasks.priors), and data that
hands out batches by index. Each task adds only its loss (eqs. 2, S1, S2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lumos.diffusion import GaussianDiffusion
from lumos.models import MODEL_CLASSES
from lumos.tasks.priors import init_from


@dataclass
class TransferTask:
    data: object  # any dataset with len() and batch(indices)
    model_args: dict
    parent: Path | None  # the checkpoint to start from (a prior, or the previous stage)
    condition_dropout: float
    diffusion: GaussianDiffusion
    name: str = "transfer"
    model_class: str = "dit"  # a key of lumos.models.MODEL_CLASSES
    condition: str = "vision"  # what the condition tokens come from: vision or text
    transfer: dict = field(default_factory=dict)  # the transfer report, once built

    def build_model(self) -> nn.Module:
        model = MODEL_CLASSES[self.model_class](**self.model_args)
        self.transfer = init_from(model, self.parent, condition=self.condition)
        return model

    def num_samples(self) -> int:
        return len(self.data)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.data.batch(indices)
