"""How much T2I training strict alignment on held-out prompts needs (issue 15).

    python bench/t2i_learning_curve.py [--variant tiny] [--res 32] [--pairs 4000] [--steps 16000]

Beyond what the tiny pipeline can afford: the T2I code path of the pipeline (``T2ITask``,
``train``, ``text_to_image``, the tiny random T5, lumos/eval/alignment.py) trained from scratch
on ``pairs`` fresh mini-world scenes (the procedural world has no size limit, unlike the
pipeline's curated ~100 T2I pairs), with a small AutoencoderKL trained here first
(``--vae-blocks``: 2 entries = 2x down, 3 = 4x, as train-vae). At each quarter of the steps the
EMA checkpoint samples ``--held`` held-out prompts (another seed's scenes) and the strict tags
are printed. Everything runs on one thread so two runs can share a 2-core machine.
Last line: `RESULT colour=<x> count=<y> overall=<z> steps=<n> pairs=<m>`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lumos.caption.mixing import CaptionMixer
from lumos.config import Diffusion, Optimizer, TextEncoder
from lumos.data.extract import square_crop
from lumos.data.t2i import T2IDataset, _save
from lumos.demo.scenes import caption, render, sample_scene
from lumos.diffusion import GaussianDiffusion
from lumos.encoders.text import build_text_encoder
from lumos.encoders.vae import LatentVAE
from lumos.eval.alignment import TAGS, alignment_scores
from lumos.sample.i2i import load_model
from lumos.sample.t2i import text_to_image
from lumos.tasks.t2i import T2ITask
from lumos.train.loop import RunSpec, train
from lumos.train.vae import latent_scale, train_autoencoder

TRAIN_SEED, HELD_SEED, VAE_SEED = 11, 12, 1  # three disjoint scene streams


def scenes(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, 96, 160, 4) for _ in range(n)]


def pixels(batch: list, res: int) -> torch.Tensor:
    prep = square_crop(res)
    return torch.stack([prep(render(s)) * 2 - 1 for s in batch])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="tiny")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=16000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--held", type=int, default=48)
    ap.add_argument("--vae-blocks", type=int, nargs="+", default=[32, 32])
    ap.add_argument("--vae-steps", type=int, default=800)
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=4.5)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(a.workdir or tempfile.mkdtemp(prefix="t2i-curve-"))
    t0 = time.time()
    # train-vae's recipe (params.yaml vae_train): 800 steps of 32 px crops, lr 3e-3, SD's KL weight
    autoencoder = train_autoencoder(pixels(scenes(456, VAE_SEED), a.res), steps=a.vae_steps, batch_size=16,
                                    lr=3e-3, kl_weight=1e-6, seed=0, crop=min(32, a.res),
                                    block_out_channels=tuple(a.vae_blocks))
    fit = scenes(a.pairs, TRAIN_SEED)
    vae = LatentVAE(autoencoder, latent_scale(autoencoder, pixels(fit[:128], a.res)))
    text = build_text_encoder(TextEncoder(name="t5", pretrained=None, max_length=48))
    print(f"vae trained in {time.time() - t0:.0f} s", flush=True)
    parts: dict[str, list] = {k: [] for k in ("mean", "std", "emb", "mask")}
    with torch.no_grad():
        for i in range(0, a.pairs, 64):
            chunk = fit[i:i + 64]
            mean, std = vae.encode(pixels(chunk, a.res))
            emb, mask = text([caption(s) for s in chunk])
            for k, v in zip(parts, (mean, std, emb, mask)):
                parts[k].append(v)
    mean, std, emb, mask = (torch.cat(parts[k]) for k in parts)
    keys = [f"k{i}" for i in range(a.pairs)]
    _save(str(root / "latents" / f"a--{a.res}x{a.res}.safetensors"), {"latent_mean": mean, "latent_std": std},
          keys, {"bucket": [a.res, a.res]})
    _save(str(root / "t5" / "a.safetensors"), {"raw_emb": emb, "raw_mask": mask, "long_emb": emb.clone(),
                                               "long_mask": mask.clone(),
                                               "has_long": torch.zeros(a.pairs, dtype=torch.bool)}, keys, {})
    args = {"variant": a.variant, "latent_channels": mean.shape[1], "latent_size": mean.shape[-1],
            "condition_dim": text.width, "condition_tokens": 48, "backbone": "lumos", "learn_sigma": True}
    task = T2ITask(T2IDataset(root / "latents", root / "t5"), args, None, 0.1, GaussianDiffusion(),
                   mixer=CaptionMixer(0.0))
    quarter = a.steps // 4
    spec = RunSpec(steps=a.steps, global_batch=a.batch, micro_batch=a.batch, precision="fp32", zero_stage=2,
                   optimizer=Optimizer(lr=a.lr, weight_decay=0.03, warmup_steps=10, grad_clip=1.0),
                   ema_decay=0.95, seed=0, checkpoint_every=quarter, log_every=100)
    t0 = time.time()
    train(task, spec, root / "run", {"model_args": args})
    train_s = time.time() - t0
    held = scenes(a.held, HELD_SEED)
    sampling = Diffusion(sample_steps=a.sample_steps, cfg_scale=a.cfg)
    for step in range(quarter, 4 * quarter + 1, quarter):
        model, _ = load_model(root / "run" / "checkpoints" / f"step-{step:07d}")
        images = text_to_image(model, vae, text, [caption(s) for s in held], a.res, a.res, sampling, seed=0)
        r = alignment_scores([x.permute(1, 2, 0).numpy() for x in images], [s.to_dict() for s in held])
        print(json.dumps({"step": step} | {k: round(r[k], 3) for k in TAGS}), flush=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"{a.variant}: {params} parameters, {a.steps} steps of {a.batch} in {train_s:.0f} s on one thread")
    print(f"RESULT colour={r['colour']:.3f} count={r['count']:.3f} overall={r['overall']:.3f} "
          f"steps={a.steps} pairs={a.pairs}")


if __name__ == "__main__":
    main()
