"""A cheap held-out metric at saved checkpoints (``eval.every``): the curves of metric over
training steps (Figs. 2c, 5, 8-12) without a full FID run per checkpoint.

    HeldoutLoss(name, latents, condition, diffusion, timesteps=PROBE_TIMESTEPS, seed=0)
        probe(model) -> {"eval/<name>": eq. (1)'s noise-prediction MSE on held-out items}
    ema_weights(module, ema)   the module with the EMA weights inside the block (restored after)
    due(saved, every, last)    whether the ``saved``-th checkpoint is probed

The MSE is measured at fixed timesteps with fixed noise (seeded), so two checkpoints are
compared on exactly the same problems and the curve moves only with the weights. It is the
epsilon part of the loss only (no L_vlb), the same number for a learned-variance model.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

PROBE_TIMESTEPS = (50, 250, 500, 750, 950)  # every held-out item is noised at each of these
PROBE_MAX_ITEMS = 64  # held-out items a probe keeps (evenly spaced over the protocol's set)


def spaced(items: list, n: int = PROBE_MAX_ITEMS) -> list:
    """At most ``n`` items evenly spaced over ``items`` (ImageNet val is sorted by class)."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def due(saved: int, every: int | None, last: bool) -> bool:
    """Probe every ``every``-th saved checkpoint and the final one; never when ``every`` is None."""
    return every is not None and (saved % every == 0 or last)


@contextmanager
def ema_weights(module: nn.Module, ema):
    """Swap the EMA weights in (eval mode, no grad), and the trained ones back afterwards."""
    backup = {n: p.detach().clone() for n, p in module.named_parameters()}
    training = module.training
    ema.copy_to(module)
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        with torch.no_grad():
            for n, p in module.named_parameters():
                p.copy_(backup[n])
        module.train(training)


class HeldoutLoss:
    """Eq. (1)'s ||eps - eps_theta(z_t, t, c)||^2 on held-out (latent, condition) pairs."""

    def __init__(self, name: str, latents: torch.Tensor, condition: torch.Tensor, diffusion,
                 timesteps: tuple[int, ...] = PROBE_TIMESTEPS, seed: int = 0, batch_size: int = 32,
                 condition_mask: torch.Tensor | None = None) -> None:
        if len(latents) == 0 or len(latents) != len(condition):
            raise ValueError(f"held-out probe {name!r}: {len(latents)} latents, {len(condition)} conditions")
        if max(timesteps) >= diffusion.steps:
            raise ValueError(f"probe timesteps {timesteps} exceed the {diffusion.steps} diffusion steps")
        self.name, self.diffusion, self.batch_size = name, diffusion, batch_size
        n, k = len(latents), len(timesteps)
        self.z0 = latents.float().repeat_interleave(k, 0)
        self.condition = condition.float().repeat_interleave(k, 0)
        self.mask = None if condition_mask is None else condition_mask.repeat_interleave(k, 0)  # T5 padding
        self.t = torch.tensor(timesteps).repeat(n)
        self.noise = torch.randn(self.z0.shape, generator=torch.Generator().manual_seed(seed))
        self.items = n

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        c = self.z0.shape[1]
        total = 0.0
        for i in range(0, len(self.z0), self.batch_size):
            z0, noise = self.z0[i:i + self.batch_size].to(device), self.noise[i:i + self.batch_size].to(device)
            t = self.t[i:i + self.batch_size].to(device)
            z_t = self.diffusion.train_scheduler.add_noise(z0, noise, t)
            kwargs = {} if self.mask is None else {"condition_mask": self.mask[i:i + self.batch_size].to(device)}
            out = model(z_t.to(dtype), t, self.condition[i:i + self.batch_size].to(device, dtype), **kwargs)
            total += float(((out[:, :c].float() - noise) ** 2).mean(dim=tuple(range(1, z0.ndim))).sum())
        return {f"eval/{self.name}": total / len(self.z0)}
