"""Exponential moving average of the trained weights (kept in fp32, saved and restored)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- decay * shadow + (1 - decay) * param, for all tensors in one fused call."""
        params = [p.detach().float() for _, p in model.named_parameters()]
        torch._foreach_lerp_(list(self.shadow.values()), params, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]}...")
        self.shadow = {n: state[n].float().clone() for n in self.shadow}

    def to(self, device: torch.device | str) -> EMA:
        """Move the shadow beside the parameters (it is loaded on the CPU)."""
        self.shadow = {n: v.to(device) for n, v in self.shadow.items()}
        return self

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            p.copy_(self.shadow[n].to(p.dtype))
