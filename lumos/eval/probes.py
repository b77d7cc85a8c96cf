"""Held-out probes for training (``eval.every``; lumos/train/probe.py): which held-out items a
task's checkpoints are measured on while it trains.

    i2i_probe(profile) -> HeldoutLoss | None   eq. (1)'s MSE on held-out ImageNet val images
                                              (``eval.images.imagenet``), None when eval.every is off
    T2IProbes(profile).at(resolution)          the same on held-out COCO images and their raw captions
                                              (``eval.images.coco30k``), one probe per T2I stage resolution
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


class T2IProbes:
    """Held-out COCO (caption, image) pairs for the T2I stages: the captions are encoded once (T5, or CLIP for Fig. 11),
    the images encoded at each stage's square resolution on demand (Fig. 5's curves)."""

    def __init__(self, profile: Profile) -> None:
        from lumos.encoders.text import build_text_encoder
        from lumos.eval.references import coco_prompts

        self.profile = profile
        proto = profile.eval.images.get("coco30k")
        if proto is None or proto.prompts is None:
            raise KeyError("eval.every needs eval.images.coco30k with prompts: the held-out pairs of the T2I curve")
        self.pairs = spaced(coco_prompts(proto.prompts, proto.reference, 10**9))
        device = "cuda" if torch.cuda.is_available() else "cpu"  # the text encoder once, then only its outputs are kept
        with torch.no_grad():
            emb, mask = build_text_encoder(profile.text_encoder, device)([p["prompt"] for p in self.pairs])
        self.emb, self.mask = emb.float().cpu(), mask.cpu()
        self.vae = None  # built on the first stage that trains

    @torch.no_grad()
    def at(self, resolution: int) -> HeldoutLoss:
        from PIL import Image

        from lumos.data.extract import square_crop
        from lumos.diffusion import GaussianDiffusion
        from lumos.encoders import build_vae

        if self.vae is None:
            self.vae = build_vae(self.profile.vae)
        prep = square_crop(resolution)
        x = torch.stack([prep(Image.open(p["path"]).convert("RGB")) for p in self.pairs])
        latents = torch.cat([self.vae.encode(x[i:i + 16] * 2 - 1)[0].float() for i in range(0, len(x), 16)])
        diffusion = GaussianDiffusion(self.profile.diffusion.train_steps)
        return HeldoutLoss("heldout_loss_coco", latents, self.emb, diffusion, seed=self.profile.eval.seed,
                           condition_mask=self.mask)

