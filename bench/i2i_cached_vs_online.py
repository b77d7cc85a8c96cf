"""Benchmark: an I2I training step on cached features against one that encodes images on the fly.

Same ConditionedDiT (``--variant``, default tiny), same batch size, same steps, same plain
``torch.optim.AdamW`` loop and the same ``I2ITask.loss``; only where the batch comes from differs:

  cached  the batch is indexed from a feature shard (latent mean/std + condition tokens) read
          with ``FeatureShards``, as the `train` stage does
  online  the batch's raw images (B,3,R,R) in [0,1] go through the frozen VAE
          (``build_vae(profile.vae)``) and vision encoder (``build_vision_encoder(...)``) first

The encoders are the active profile's (tiny: random AutoencoderKL, 2-layer ViT at its own
``vision_encoder.resolution``); ``--resolution`` sets the image side (default 128, a multiple of
16 and of the VAE's factor 8), so the latent is R/8 x R/8. The image pool (``--pool`` random
images, torch seed 0) is encoded once, untimed, to write the cached shard. Each mode runs in its
own subprocess with ``--threads`` torch threads (default 1: on a shared 2-core machine two
threads stall whenever another process holds a core); the first ``--warmup`` steps are not
timed. Target: cached/online >= 3x.

    .venv/bin/python bench/i2i_cached_vs_online.py --resolution 64 --steps 5   # quick check
    .venv/bin/python bench/i2i_cached_vs_online.py                             # R=128, B=8, 50 steps
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def measure(mode: str, args: argparse.Namespace, work: Path) -> dict:
    """Runs in the child: build everything, warm up, then time ``args.steps`` optimizer steps."""
    from lumos.config import load_profile
    from lumos.data.features import FeatureShards, write_feature_shard
    from lumos.diffusion import GaussianDiffusion
    from lumos.encoders import build_vae, build_vision_encoder
    from lumos.tasks.i2i import I2ITask
    from lumos.train.loop import step_generator

    torch.set_num_threads(args.threads)
    profile = load_profile(PARAMS)
    vae, encoder = build_vae(profile.vae), build_vision_encoder(profile.vision_encoder)
    if args.resolution % 16 or args.resolution % vae.downsample:
        raise SystemExit(f"--resolution {args.resolution} must be a multiple of 16 and of {vae.downsample}")
    images = torch.rand(args.pool, 3, args.resolution, args.resolution,
                        generator=torch.Generator().manual_seed(0))
    shard = work / "features" / "bench.safetensors"
    if not shard.exists():  # encoded once (untimed) by the first child; same features for both
        with torch.no_grad():
            mean, std = vae.encode(images * 2 - 1)
            cond = encoder(images)
        write_feature_shard(shard, [str(i) for i in range(args.pool)],
                            {"latent_mean": mean, "latent_std": std, "condition": cond}, meta={})
    task = I2ITask(FeatureShards(shard.parent), args.variant, profile.model.condition_dropout,
                   GaussianDiffusion(profile.diffusion.train_steps), args.gradient_checkpointing)
    torch.manual_seed(0)
    model = task.build_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=profile.train.optimizer.lr,
                            weight_decay=profile.train.optimizer.weight_decay)

    def step(s: int) -> float:
        g = step_generator(0, s, 0)
        idx = torch.randint(0, args.pool, (args.batch,), generator=g)
        if mode == "cached":
            batch = task.batch(idx)
        else:
            x = images[idx]
            with torch.no_grad():
                mean, std = vae.encode(x * 2 - 1)  # the VAE wants [-1, 1]
                batch = {"latent_mean": mean, "latent_std": std, "condition": encoder(x)}
        loss = task.loss(model, model, batch, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for s in range(args.warmup):
        step(s)
    t0 = time.perf_counter()
    for s in range(args.warmup, args.warmup + args.steps):
        step(s)
    seconds = time.perf_counter() - t0
    return {"mode": mode, "seconds": seconds, "steps_per_s": args.steps / seconds,
            "latent": list(task.data.tensors["latent_mean"].shape[1:]),
            "condition": list(task.data.tensors["condition"].shape[1:]),
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="tiny", choices=["tiny", "B/2", "L/2", "XL/2"])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pool", type=int, default=64, help="distinct images the batches draw from")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per child (1: robust on a shared CPU, see bench/README.md)")
    ap.add_argument("--measure", choices=["cached", "online"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args, args.work)))
        return

    res = {}
    with tempfile.TemporaryDirectory(prefix="i2ibench-") as tmp:
        for mode in ("cached", "online"):
            cmd = [sys.executable, __file__, "--measure", mode, "--work", tmp] + sys.argv[1:]
            done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
            res[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    c, o = res["cached"], res["online"]
    print(f"variant {args.variant}, images {args.resolution}x{args.resolution}, batch {args.batch}, "
          f"latent {c['latent']}, condition {c['condition']}, {args.steps} timed steps "
          f"(+{args.warmup} warm-up), {c['threads']} torch threads")
    print(f"\n{'mode':8} {'seconds':>8} {'steps/s':>8}")
    for r in (c, o):
        print(f"{r['mode']:8} {r['seconds']:8.2f} {r['steps_per_s']:8.2f}")
    ratio = c["steps_per_s"] / o["steps_per_s"]
    print(f"\ncached/online = {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'not met'})")


if __name__ == "__main__":
    main()
