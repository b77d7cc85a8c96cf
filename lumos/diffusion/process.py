"""DDPM noising, the epsilon-MSE loss of eq. (1) (with IDDPM's hybrid loss when the model also
learns the variance), and guided sampling with diffusers' solvers.

The model and the noise process are separate objects (as in DiT): this one only needs a
function eps(z_t, t, condition); a model that outputs [epsilon | variance] (2C channels) is
trained with L_simple + lambda * L_vlb (Nichol & Dhariwal 2021, eq. 16, as DiT and PixArt) and
sampled with its epsilon half.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

EpsFn = Callable[..., torch.Tensor]  # eps(z_t, t, condition, **model_kwargs)
SAMPLERS = {"dpm-solver++": DPMSolverMultistepScheduler, "ddim": DDIMScheduler, "ddpm": DDPMScheduler}


def epsilon_half(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The epsilon part of a model output: ``out`` itself, or the first half along the one
    dimension where it is twice as wide as the latents ``z`` (channels of (B,C,..) or (B,F,C,..))."""
    if out.shape == z.shape:
        return out
    wider = [d for d in range(out.ndim) if out.shape[d] == 2 * z.shape[d]]
    if out.ndim != z.ndim or len(wider) != 1 or any(
            out.shape[d] != z.shape[d] for d in range(out.ndim) if d != wider[0]):
        raise ValueError(f"model output {tuple(out.shape)} is neither epsilon nor [epsilon | variance] "
                         f"for latents {tuple(z.shape)}")
    return out.narrow(wider[0], 0, z.shape[wider[0]])


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


def _normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _discretized_gaussian_log_likelihood(x, mean, log_scale) -> torch.Tensor:
    """log P(x) of x in [-1, 1] binned into 256 levels under N(mean, exp(log_scale)^2) (IDDPM's
    decoder term L_0, with the tanh approximation of the normal CDF)."""
    cdf = lambda v: 0.5 * (1.0 + torch.tanh((2.0 / torch.pi) ** 0.5 * (v + 0.044715 * v**3)))  # noqa: E731
    inv_std = torch.exp(-log_scale)
    cdf_plus, cdf_min = cdf(inv_std * (x - mean + 1 / 255)), cdf(inv_std * (x - mean - 1 / 255))
    log = lambda v: torch.log(v.clamp(min=1e-12))  # noqa: E731
    return torch.where(x < -0.999, log(cdf_plus),
                       torch.where(x > 0.999, log(1 - cdf_min), log(cdf_plus - cdf_min)))


class GaussianDiffusion:
    """DDPM with a linear beta schedule over ``steps`` (1000 in the paper), epsilon prediction;
    ``vlb_weight`` is lambda of the hybrid loss (used only by models that learn the variance)."""

    def __init__(self, steps: int = 1000, vlb_weight: float = 1.0) -> None:
        self.train_scheduler = DDPMScheduler(num_train_timesteps=steps, beta_schedule="linear",
                                             prediction_type="epsilon", clip_sample=False)
        self.steps, self.vlb_weight = steps, vlb_weight
        betas = self.train_scheduler.betas.double()
        abar = torch.cumprod(1 - betas, dim=0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar)  # q(z_{t-1} | z_t, z_0), IDDPM eq. 10-12
        self._q = {"log_beta": betas.log(), "abar": abar,
                   "post_logvar": torch.cat([post_var[1:2], post_var[1:]]).log(),  # clipped at t = 0
                   "post_c0": betas * abar_prev.sqrt() / (1 - abar),
                   "post_ct": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)}

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        v = self._q[name].to(t.device)[t].float()
        return v.view(-1, *[1] * (like.ndim - 1))

    def vlb(self, eps: torch.Tensor, v: torch.Tensor, z0: torch.Tensor, z_t: torch.Tensor,
            t: torch.Tensor) -> torch.Tensor:
        """Per-sample L_vlb term in bits: KL(q(z_{t-1}|z_t,z_0) || p(z_{t-1}|z_t)) for t > 0, the
        decoder NLL for t = 0. The model's log-variance interpolates log beta_t and the clipped
        posterior log-variance by (v + 1) / 2 (IDDPM eq. 15)."""
        z0, z_t = z0.float(), z_t.float()
        at = lambda name: self._at(name, t, z0)  # noqa: E731
        true_mean = at("post_c0") * z0 + at("post_ct") * z_t
        frac = (v.float() + 1) / 2
        logvar = frac * at("log_beta") + (1 - frac) * at("post_logvar")
        x0_pred = (z_t - (1 - at("abar")).sqrt() * eps.float()) / at("abar").sqrt()
        mean = at("post_c0") * x0_pred + at("post_ct") * z_t
        kl = _mean_flat(_normal_kl(true_mean, at("post_logvar"), mean, logvar)) / torch.log(torch.tensor(2.0))
        nll = -_mean_flat(_discretized_gaussian_log_likelihood(z0, mean, 0.5 * logvar)) / torch.log(torch.tensor(2.0))
        return torch.where(t == 0, nll, kl)

    def per_sample_loss(self, out: torch.Tensor, z0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor) -> torch.Tensor:
        """(B,) losses: eq. (1)'s ||eps - eps_theta||^2 (mean over elements), plus, for a model
        with a [epsilon | variance] output, lambda * L_vlb with the mean's gradient stopped."""
        c = z0.shape[1]
        if out.shape[1] == c:
            return _mean_flat((out.float() - noise.float()) ** 2)
        if out.shape[1] != 2 * c:
            raise ValueError(f"model output has {out.shape[1]} channels; latents have {c}")
        eps, v = out.split(c, dim=1)
        mse = _mean_flat((eps.float() - noise.float()) ** 2)
        return mse + self.vlb_weight * self.vlb(eps.detach(), v, z0, z_t, t)

    def loss(self, eps_fn: EpsFn, z0: torch.Tensor, condition: torch.Tensor,
             generator: torch.Generator | None = None, **model_kwargs) -> torch.Tensor:
        """Eq. (1): E_t,eps || eps - eps_theta(z_t, t, tau(x)) ||^2 for a batch of clean latents
        (``model_kwargs``: what else the model takes, e.g. a T5 mask, an NVS input view and pose)."""
        b = z0.shape[0]
        t = torch.randint(0, self.steps, (b,), generator=generator).to(z0.device)
        noise = torch.randn(z0.shape, generator=generator).to(z0)
        z_t = self.train_scheduler.add_noise(z0, noise, t)
        return self.per_sample_loss(eps_fn(z_t, t, condition, **model_kwargs), z0, z_t, t, noise).mean()

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, condition: torch.Tensor, null: torch.Tensor, shape: tuple[int, ...],
               sampler: str = "dpm-solver++", steps: int = 20, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None,
               init: torch.Tensor | None = None, model_kwargs: dict | None = None,
               null_kwargs: dict | None = None,
               after_step: Callable[[torch.Tensor], torch.Tensor] | None = None,
               strength: float = 1.0) -> torch.Tensor:
        """Draw latents of ``shape`` guided by ``condition`` against ``null`` (both (B,M,d)),
        starting from ``init`` noise when given (e.g. one noise shared along an interpolation).
        ``strength`` < 1 (SDEdit, Meng et al. 2022): ``init`` holds clean latents, noised to the
        level of the last ``round(strength * steps)`` solver steps, which alone run.

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
        timesteps = scheduler.timesteps
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if strength < 1.0:
            if init is None:
                raise ValueError("strength < 1 starts from given latents: pass init")
            begin = steps - max(1, round(strength * steps))
            timesteps = timesteps[begin:]
            scheduler.set_begin_index(begin)
            noise = torch.randn(shape, generator=generator)  # on the CPU: the same noise on any device
            z = self.train_scheduler.add_noise(init.float().cpu(), noise, timesteps[:1].cpu().long())
            z = z.to(condition.device)
            if after_step is not None:
                z = after_step(z)
        else:
            if init is None:
                init = torch.randn(shape, generator=generator)  # on the CPU: the same noise on any device
            z = init.to(condition.device) * scheduler.init_noise_sigma
        for t in timesteps:
            z_in = scheduler.scale_model_input(z, t)
            tt = t.expand(shape[0]).to(condition.device)
            if cfg_scale == 1.0:
                eps = epsilon_half(eps_fn(z_in, tt, condition, **kw), z_in)
            else:  # classifier-free guidance: eps_null + s (eps_cond - eps_null)
                z2 = torch.cat([z_in, z_in])
                both = epsilon_half(eps_fn(z2, torch.cat([tt, tt]), torch.cat([condition, null]), **both_kw), z2)
                cond, uncond = both.chunk(2)
                eps = uncond + cfg_scale * (cond - uncond)
            z = scheduler.step(eps, t, z, generator=generator).prev_sample
            if after_step is not None:
                z = after_step(z)
        return z
