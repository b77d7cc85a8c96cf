"""Stage `train-vae` (tiny profile): a small ``AutoencoderKL`` that reconstructs mini-world scenes.

The paper encodes images with Stable Diffusion's frozen VAE (eq. 1); its weights cannot be
downloaded here, and a random autoencoder turns every sample into coloured noise. This stage
trains the same diffusers class, SD's geometry (4 latent channels, 8x downsampling), on the
mini-world's images with SD's objective minus the adversarial and perceptual terms: pixel L1 +
L2 and a tiny KL weight. It measures the latents' scale (1 / std, SD's 0.18215 is the same
quantity for its VAE) into the saved config, and the PSNR on images held out of training.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image

from lumos.config import VAETrain
from lumos.data.extract import square_crop
from lumos.encoders.frozen import seeded
from lumos.encoders.vae import tiny_autoencoder
from lumos.io import atomic_dir, atomic_write_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def load_folder(folder: Path | str, resolution: int) -> torch.Tensor:
    """Every decodable image of ``folder`` (sorted by name), square-cropped: (N,3,R,R) in [-1,1]."""
    prep = square_crop(resolution)
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(prep(im.convert("RGB")) * 2 - 1)
        except OSError:  # the mini-world's deliberately broken files
            continue
    if not images:
        raise FileNotFoundError(f"no readable images in {folder}")
    return torch.stack(images)


def random_crops(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """One random ``size`` square per image (the autoencoder is convolutional: training on crops
    of the pipeline's resolution costs (size/R)^2 and keeps the scenes' scale)."""
    r = x.shape[-1]
    if size >= r:
        return x
    ys, xs = torch.randint(r - size + 1, (2, len(x)), generator=gen).tolist()
    return torch.stack([im[:, y: y + size, x0: x0 + size] for im, y, x0 in zip(x, ys, xs)])


def train_autoencoder(images: torch.Tensor, steps: int, batch_size: int, lr: float,
                      kl_weight: float, seed: int = 0, crop: int | None = None,
                      block_out_channels: tuple[int, ...] = (16, 32, 32, 32),
                      latent_channels: int = 4) -> AutoencoderKL:
    """Fit a fresh tiny ``AutoencoderKL`` (``block_out_channels``, ``latent_channels``) to
    ``images`` (N,3,R,R in [-1,1]) with random flips and, with ``crop``, random crops of that side."""
    vae = seeded(lambda: tiny_autoencoder(tuple(block_out_channels), latent_channels), seed)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay to 10 %
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=gen)
        x = images[idx]
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = random_crops(x, crop, gen) if crop else x
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
    vae.eval()
    return vae


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Posterior mean -> decode, clamped to [-1,1] (what the diffusion pipeline sees)."""
    return torch.cat([vae.decode(vae.encode(images[i: i + batch_size]).latent_dist.mean).sample
                      for i in range(0, len(images), batch_size)]).clamp(-1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) of images in [-1,1] (peak-to-peak 2)."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(4.0 / mse)).mean())


@torch.no_grad()
def latent_scale(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """1 / std of the posterior means: scaled latents have unit variance (SD's 0.18215 is this)."""
    means = torch.cat([vae.encode(images[i: i + 32]).latent_dist.mean for i in range(0, len(images), 32)])
    return float(1.0 / means.std().clamp_min(1e-6))


def run_train_vae(cfg: VAETrain) -> dict:
    """Train, measure and save ``cfg.out`` (diffusers format + summary.json), atomically; a rerun
    with the same settings and images finds the summary and skips."""
    out = Path(cfg.out)
    images = load_folder(cfg.images, cfg.resolution)
    fingerprint = {**cfg.model_dump(), "n_images": len(images)}
    done = out / "summary.json"
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
        return {**json.loads(done.read_text()), "skipped": True}
    if cfg.held_out >= len(images):
        raise ValueError(f"held_out ({cfg.held_out}) must be < the {len(images)} images in {cfg.images}")
    train, held = images[cfg.held_out:], images[: cfg.held_out]
    t0 = time.perf_counter()
    vae = train_autoencoder(train, cfg.steps, cfg.batch_size, cfg.lr, cfg.kl_weight, cfg.seed,
                            cfg.crop, cfg.block_out_channels, cfg.latent_channels)
    seconds = time.perf_counter() - t0
    vae.register_to_config(scaling_factor=latent_scale(vae, train))
    summary = {"fingerprint": fingerprint, "train_images": len(train), "held_out_images": len(held),
               "train_seconds": round(seconds, 1), "scaling_factor": vae.config.scaling_factor,
               "psnr_held_out": round(psnr(reconstruct(vae, held), held), 2) if len(held) else None,
               "psnr_train": round(psnr(reconstruct(vae, train[:64]), train[:64]), 2)}
    with atomic_dir(out) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=1))
    return summary


def run_stage(profile) -> dict:
    """The `train-vae` stage on a profile: trains when it has ``vae_train`` (tiny); otherwise
    (paper: SD's VAE by name) writes only a summary saying so, for DVC's output."""
    if profile.vae_train is None:
        out = Path("models/vae")
        summary = {"trained": False, "reason": f"vae.pretrained is {profile.vae.pretrained!r}"}
        with atomic_dir(out) as tmp:
            atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=1))
        return summary
    return {"trained": True, **run_train_vae(profile.vae_train)}
