"""Lumos-I2I sampling: variations of an image, and interpolation between two images by mixing
their encoder features (supplement I.4), with classifier-free guidance against the null
condition learned through condition dropout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision.utils import make_grid, save_image

from lumos.config import Diffusion
from lumos.data.extract import square_crop
from lumos.diffusion import GaussianDiffusion
from lumos.io import atomic_write_bytes
from lumos.models import MODEL_CLASSES, ConditionedDiT


def load_model(checkpoint: Path | str, ema: bool = True) -> tuple[ConditionedDiT, dict]:
    """Rebuild the DiT from a checkpoint's config.json and load its (EMA) weights."""
    ckpt = Path(checkpoint)
    config = json.loads((ckpt / "config.json").read_text())
    model = MODEL_CLASSES[config.get("model_class", "dit")](**config["model_args"])
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    if ema:
        model.load_state_dict(load_file(str(ckpt / "ema.safetensors")), strict=False)  # parameters only
    return model.eval(), config


def _decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """To [0, 1], fp32 on the CPU (the VAE may run on a GPU, in its precision param)."""
    return ((vae.decode(latents).clamp(-1, 1) + 1) / 2).float().cpu()


@torch.no_grad()
def variations(model: ConditionedDiT, vae, encoder, images: list[Image.Image], n: int,
               resolution: int, settings: Diffusion, seed: int) -> torch.Tensor:
    """Rows of [input, n samples conditioned on its tokens] as a (rows*(n+1),3,R,R) batch."""
    diffusion = GaussianDiffusion(settings.train_steps)
    x = torch.stack([square_crop(resolution)(im) for im in images])
    cond = encoder(x).repeat_interleave(n, dim=0)
    g = torch.Generator().manual_seed(seed)
    shape = (cond.shape[0], vae.latent_channels, resolution // vae.downsample, resolution // vae.downsample)
    z = diffusion.sample(model, cond, model.null(cond.shape[0]), shape, settings.sampler,
                         settings.sample_steps, settings.cfg_scale, g)
    samples = _decode(vae, z).view(len(images), n, 3, resolution, resolution)
    return torch.cat([x[:, None], samples], dim=1).flatten(0, 1)


@torch.no_grad()
def interpolation(model: ConditionedDiT, vae, encoder, a: Image.Image, b: Image.Image, steps: int,
                  resolution: int, settings: Diffusion, seed: int) -> torch.Tensor:
    """[a, samples along (1-w) tau(a) + w tau(b) for w in [0, 1] from one noise, b]."""
    diffusion = GaussianDiffusion(settings.train_steps)
    x = torch.stack([square_crop(resolution)(a), square_crop(resolution)(b)])
    ca, cb = encoder(x).chunk(2)
    w = torch.linspace(0, 1, steps)[:, None, None]
    cond = (1 - w) * ca + w * cb
    side = resolution // vae.downsample
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, vae.latent_channels, side, side), generator=g)
    # The same starting noise for every weight: only the condition moves along the strip.
    z = diffusion.sample(model, cond, model.null(steps), (steps, vae.latent_channels, side, side),
                         settings.sampler, settings.sample_steps, settings.cfg_scale, g,
                         init=noise.expand(steps, -1, -1, -1))
    return torch.cat([x[:1], _decode(vae, z), x[1:]])


def save_png(image: torch.Tensor, path: Path | str) -> None:
    """A (3,H,W) image in [0, 1] as a PNG, written atomically."""
    buf = io.BytesIO()
    save_image(image, buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def save_grid(images: torch.Tensor, path: Path | str, per_row: int) -> None:
    save_png(make_grid(images, nrow=per_row, padding=2, pad_value=1.0), path)
