"""DDPM noising, the epsilon-MSE loss of eq. (1), and guided sampling with diffusers' solvers.

The model and the noise process are separate objects (as in DiT): this one only needs a
function eps(z_t, t, condition).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = {"dpm-solver++": DPMSolverMultistepScheduler, "ddim": DDIMScheduler, "ddpm": DDPMScheduler}


class GaussianDiffusion:
    """DDPM with a linear beta schedule over ``steps`` (1000 in the paper), epsilon prediction."""

    def __init__(self, steps: int = 1000) -> None:
        self.train_scheduler = DDPMScheduler(num_train_timesteps=steps, beta_schedule="linear",
                                             prediction_type="epsilon", clip_sample=False)
        self.steps = steps

    def loss(self, eps_fn: EpsFn, z0: torch.Tensor, condition: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. (1): E_t,eps || eps - eps_theta(z_t, t, tau(x)) ||^2 for a batch of clean latents."""
        b = z0.shape[0]
        t = torch.randint(0, self.steps, (b,), generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        z_t = self.train_scheduler.add_noise(z0, noise, t)
        return F.mse_loss(eps_fn(z_t, t, condition).float(), noise.float())

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, condition: torch.Tensor, null: torch.Tensor, shape: tuple[int, ...],
               sampler: str = "dpm-solver++", steps: int = 20, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None,
               init: torch.Tensor | None = None) -> torch.Tensor:
        """Draw latents of ``shape`` guided by ``condition`` against ``null`` (both (B,M,d)),
        starting from ``init`` noise when given (e.g. one noise shared along an interpolation)."""
        scheduler = SAMPLERS[sampler].from_config(self.train_scheduler.config)
        if sampler == "dpm-solver++":
            scheduler = DPMSolverMultistepScheduler.from_config(
                self.train_scheduler.config, algorithm_type="dpmsolver++", solver_order=2)
        scheduler.set_timesteps(steps, device=condition.device)
        if init is None:
            init = torch.randn(shape, generator=generator, device=condition.device)
        z = init.to(condition.device) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            z_in = scheduler.scale_model_input(z, t)
            tt = t.expand(shape[0]).to(condition.device)
            if cfg_scale == 1.0:
                eps = eps_fn(z_in, tt, condition)
            else:  # classifier-free guidance: eps_null + s (eps_cond - eps_null)
                both = eps_fn(torch.cat([z_in, z_in]), torch.cat([tt, tt]), torch.cat([condition, null]))
                cond, uncond = both.chunk(2)
                eps = uncond + cfg_scale * (cond - uncond)
            z = scheduler.step(eps, t, z, generator=generator).prev_sample
        return z
