"""Lumos-I2V sampling: an image -> a clip. The image's latent is frame 0 at timestep 0 through
every solver step (the mask strategy of eq. S2); the other frames are denoised with CFG, from
pure noise as in the paper (``strength`` 1) or, with ``strength`` < 1, from frame 0's latent
noised to that share of the schedule (SDEdit-style initialisation; beyond the paper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lumos.config import Diffusion
from lumos.diffusion import GaussianDiffusion
from lumos.io import atomic_write_bytes
from lumos.models import VideoDiT


@torch.no_grad()
def image_to_video_latents(model: VideoDiT, first_latent: torch.Tensor, tokens: torch.Tensor, frames: int,
                           settings: Diffusion, seed: int, watch=None, strength: float = 1.0) -> torch.Tensor:
    """(B,C,h,w) clean first-frame latents, (B,M,d) their tokens -> (B,F,C,h,w) latents.
    ``watch(z)`` (tests) sees the latents after every solver step; ``strength`` < 1 starts every
    frame from the first frame's latent noised to the level of the last ``strength`` of the steps."""
    b = first_latent.shape[0]

    def eps(z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        tf = t[:, None].expand(-1, frames).clone()
        tf[:, 0] = 0
        return model(z, tf, cond)

    def keep_first(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[:, 0] = first_latent
        if watch is not None:
            watch(z)
        return z

    g = torch.Generator().manual_seed(seed)
    shape = (b, frames, *first_latent.shape[1:])
    if strength < 1.0:  # every frame starts as frame 0; the sampler noises them (frame 0 is reset)
        init = first_latent[:, None].cpu().float().expand(shape).clone()
    else:
        init = torch.randn(shape, generator=g)
        init[:, 0] = first_latent
    return GaussianDiffusion(settings.train_steps).sample(
        eps, tokens, model.null(b), shape, settings.sampler, settings.sample_steps,
        settings.cfg_scale, g, init=init, after_step=keep_first, strength=strength)


def write_clip(frames: np.ndarray, mp4: Path, gif: Path, fps: int = 8) -> None:
    """(F,H,W,3) uint8 -> an MP4 (PyAV) and a looping GIF (PIL), each written atomically."""
    import io

    from PIL import Image

    from lumos.demo.clips import encode_mp4

    atomic_write_bytes(mp4, encode_mp4(list(frames), fps))
    buf = io.BytesIO()
    images = [Image.fromarray(f) for f in frames]
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    atomic_write_bytes(gif, buf.getvalue())
