"""Held-out probes for training (``eval.every``; lumos/train/probe.py): which held-out items a
task's checkpoints are measured on while it trains.

    i2i_probe(profile) -> HeldoutLoss | None   eq. (1)'s MSE on held-out ImageNet val images
                                              (``eval.images.imagenet``), None when eval.every is off
"""

from __future__ import annotations

import torch

from lumos.config import Profile
from lumos.train.probe import HeldoutLoss, spaced


@torch.no_grad()
def i2i_probe(profile: Profile) -> HeldoutLoss | None:
    """Up to 64 held-out ImageNet val images, evenly spaced over the classes, encoded once at
    the training resolution with the run's VAE and vision encoder (as features-i2i does)."""
    if profile.eval.every is None:
        return None
    from PIL import Image

    from lumos.data.extract import square_crop
    from lumos.diffusion import GaussianDiffusion
    from lumos.encoders import build_vae, build_vision_encoder
    from lumos.eval.references import imagenet_val

    proto = profile.eval.images.get("imagenet")
    if proto is None:
        raise KeyError("eval.every needs eval.images.imagenet: the held-out images the I2I curve is measured on")
    prep = square_crop(profile.train.resolution)
    paths = spaced(imagenet_val(proto.reference, 10**9))
    x = torch.stack([prep(Image.open(p).convert("RGB")) for p in paths])
    vae, encoder = build_vae(profile.vae), build_vision_encoder(profile.vision_encoder)
    latents = torch.cat([vae.encode(x[i:i + 16] * 2 - 1)[0].float() for i in range(0, len(x), 16)])
    condition = torch.cat([encoder(x[i:i + 16]).float() for i in range(0, len(x), 16)])
    return HeldoutLoss("heldout_loss_imagenet", latents, condition,
                       GaussianDiffusion(profile.diffusion.train_steps), seed=profile.eval.seed)
