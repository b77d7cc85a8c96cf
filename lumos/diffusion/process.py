"""DDPM noising, the epsilon-MSE loss of eq. (1), and guided sampling with diffusers' solvers.

The model and the noise process are separate objects (as in DiT): this one only needs a
function eps(z_t, t, condition).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

EpsFn = Callable[..., torch.Tensor]  # eps(z_t, t, condition, **model_kwargs)
SAMPLERS = {"dpm-solver++": DPMSolverMultistepScheduler, "ddim": DDIMScheduler, "ddpm": DDPMScheduler}


class GaussianDiffusion:
    """DDPM with a linear beta schedule over ``steps`` (1000 in the paper), epsilon prediction."""

    def __init__(self, steps: int = 1000) -> None:
        self.train_scheduler = DDPMScheduler(num_train_timesteps=steps, beta_schedule="linear",
                                             prediction_type="epsilon", clip_sample=False)
        self.steps = steps

    def loss(self, eps_fn: EpsFn, z0: torch.Tensor, condition: torch.Tensor,
             generator: torch.Generator | None = None, **model_kwargs) -> torch.Tensor:
        """Eq. (1): E_t,eps || eps - eps_theta(z_t, t, tau(x)) ||^2 for a batch of clean latents
        (``model_kwargs``: what else the model takes, e.g. a T5 mask, an NVS input view and pose)."""
        b = z0.shape[0]
        t = torch.randint(0, self.steps, (b,), generator=generator).to(z0.device)
        noise = torch.randn(z0.shape, generator=generator).to(z0)
        z_t = self.train_scheduler.add_noise(z0, noise, t)
        return F.mse_loss(eps_fn(z_t, t, condition, **model_kwargs).float(), noise.float())

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, condition: torch.Tensor, null: torch.Tensor, shape: tuple[int, ...],
               sampler: str = "dpm-solver++", steps: int = 20, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None,
               init: torch.Tensor | None = None, model_kwargs: dict | None = None,
               null_kwargs: dict | None = None,
               after_step: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Draw latents of ``shape`` guided by ``condition`` against ``null`` (both (B,M,d)),
        starting from ``init`` noise when given (e.g. one noise shared along an interpolation).

        ``model_kwargs`` go to both guidance branches, except the keys ``null_kwargs`` overrides
        in the unconditional one (e.g. an all-ones T5 mask for the null condition);
        ``after_step`` may edit the latents after every solver step (I2V keeps frame 0 clean).
        """
        kw = model_kwargs or {}
        both_kw = {k: torch.cat([v, (null_kwargs or {}).get(k, v)]) for k, v in kw.items()}
        scheduler = SAMPLERS[sampler].from_config(self.train_scheduler.config)
        if sampler == "dpm-solver++":
            scheduler = DPMSolverMultistepScheduler.from_config(
                self.train_scheduler.config, algorithm_type="dpmsolver++", solver_order=2)
        scheduler.set_timesteps(steps, device=condition.device)
        if init is None:
            init = torch.randn(shape, generator=generator)  # on the CPU: the same noise on any device
        z = init.to(condition.device) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            z_in = scheduler.scale_model_input(z, t)
            tt = t.expand(shape[0]).to(condition.device)
            if cfg_scale == 1.0:
                eps = eps_fn(z_in, tt, condition, **kw)
            else:  # classifier-free guidance: eps_null + s (eps_cond - eps_null)
                both = eps_fn(torch.cat([z_in, z_in]), torch.cat([tt, tt]), torch.cat([condition, null]),
                              **both_kw)
                cond, uncond = both.chunk(2)
                eps = uncond + cfg_scale * (cond - uncond)
            z = scheduler.step(eps, t, z, generator=generator).prev_sample
            if after_step is not None:
                z = after_step(z)
        return z
