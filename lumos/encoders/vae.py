"""The frozen latent autoencoder E of eq. (1): images <-> scaled SD-VAE latents.

The paper encodes images with the Stable Diffusion VAE and scales the latents by 0.18215
(``cfg.scaling_factor``). ``encode`` returns the posterior's mean and std already scaled, so a
feature cache can store both and draw a fresh latent per epoch with :meth:`LatentVAE.sample`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL

from lumos.config import VAE
from lumos.encoders.frozen import Frozen, check_images, seeded


def tiny_autoencoder(block_out_channels: tuple[int, ...] = (16, 32, 32, 32),
                     latent_channels: int = 4) -> AutoencoderKL:
    """A small random ``AutoencoderKL``; by default SD's geometry (4 latent channels, 8x
    downsampling: ``len(block_out_channels) - 1`` halvings)."""
    levels = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=16,
        sample_size=64,
    )


class LatentVAE(Frozen):
    """Frozen ``AutoencoderKL``; latents live in the diffusion model's (scaled) space."""

    def __init__(self, vae: AutoencoderKL, scaling_factor: float) -> None:
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(scaling_factor)
        # SD3/Flux-style VAEs also shift the latents; SD's VAE (the paper's) has no shift.
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.freeze()

    @classmethod
    def from_config(cls, cfg: VAE) -> LatentVAE:
        """Hub name or local directory in ``cfg.pretrained``; ``None``: the tiny random VAE.
        ``cfg.scaling_factor`` ``None`` takes the VAE's own (train-vae measures and saves it)."""
        if cfg.pretrained is None:
            vae = seeded(tiny_autoencoder)
        else:
            if _looks_local(cfg.pretrained) and not Path(cfg.pretrained, "config.json").is_file():
                raise FileNotFoundError(
                    f"no VAE at {cfg.pretrained!r} (no config.json): run `lumos train-vae` first")
            vae = AutoencoderKL.from_pretrained(cfg.pretrained)
        scale = cfg.scaling_factor if cfg.scaling_factor is not None else vae.config.scaling_factor
        return cls(vae, scale)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downsample(self) -> int:
        """Spatial factor between image and latent sides (8 for SD's VAE and the tiny one)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,H,W) in [-1,1] -> scaled posterior (mean, std), each (B,C,H/f,W/f)."""
        check_images(images, low=-1.0, high=1.0)
        _check_divisible(images, self.downsample)
        dist = self.vae.encode(images.to(self._dtype)).latent_dist
        mean = (dist.mean - self.shift_factor) * self.scaling_factor
        return mean, dist.std * self.scaling_factor

    @staticmethod
    def sample(mean: torch.Tensor, std: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std * eps, eps ~ N(0, I): a draw from the (scaled) posterior."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * eps

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B,C,h,w) -> images (B,3,h*f,w*f) clamped to [-1,1]."""
        z = latents.to(self._dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample.clamp(-1.0, 1.0)


def build_vae(cfg: VAE) -> LatentVAE:
    """The frozen VAE that ``cfg`` names (see :meth:`LatentVAE.from_config`)."""
    return LatentVAE.from_config(cfg)


def _check_divisible(images: torch.Tensor, factor: int) -> None:
    h, w = images.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not a multiple of the VAE's factor {factor}")


def _looks_local(name: str) -> bool:
    """A path (``models/vae`` under an existing ``models/``, ``./x``, ``/abs``) rather than a
    hub name (``owner/repo``)."""
    return name.startswith((".", "/")) or Path(name).exists() or Path(name).parent.is_dir()
