"""Benchmark (GPU): one I2I training step of DiT-XL/2 at the paper's settings, and its MFU.

The step is ``I2ITask.loss`` (eq. 1: posterior sample, noise, timestep, condition dropout) on
the paper's shapes (256 px: latent (4,32,32); DINO-B [CLS]: condition (1,768)), micro-batch 256
per GPU (16384 over 64 GPUs, supplement H.1), bf16 autocast over fp32 weights, gradient
checkpointing, fused AdamW. Model FLOPs per step are counted by ``torch.utils.flop_counter`` on
a small batch without checkpointing (the recomputed forward is not useful work) and scaled to
the micro-batch; MFU = model FLOP/s / ``--peak-tflops`` (H100/H200 SXM dense bf16: 989).

    python bench/gpu_step.py                    # on a GPU: DiT-XL/2, batch 256, 10 timed steps
    python bench/gpu_step.py --tiny             # the same code path on the CPU, tiny sizes

Last line: ``RESULT step_s=<s> samples_per_s=<x> tflops=<x> mfu=<x>``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def batch(size: int, latent: tuple, condition: tuple, device: str, g: torch.Generator) -> dict:
    return {"latent_mean": torch.randn(size, *latent, generator=g).to(device),
            "latent_std": torch.full((size, *latent), 0.05).to(device),
            "condition": torch.randn(size, *condition, generator=g).to(device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU, the tiny variant, batch 4, 3 steps")
    p.add_argument("--variant", default="XL/2")
    p.add_argument("--micro-batch", type=int, default=256)
    p.add_argument("--latent", type=int, nargs=3, default=(4, 32, 32))
    p.add_argument("--condition", type=int, nargs=2, default=(1, 768))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    args = p.parse_args()
    if args.tiny:
        args.variant, args.micro_batch, args.latent, args.condition = "tiny", 4, (4, 8, 8), (1, 32)
        args.steps, args.warmup = 3, 1
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if device == "cpu" and not args.tiny:
        raise SystemExit("no GPU here: run with --tiny for the CPU code path")

    from lumos.diffusion import GaussianDiffusion
    from lumos.models import ConditionedDiT
    from lumos.tasks.i2i import I2ITask

    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    task = I2ITask(None, args.variant, 0.1, GaussianDiffusion(1000), gradient_checkpointing=True)
    args_model = {"variant": args.variant, "latent_channels": args.latent[0], "latent_size": args.latent[-1],
                  "condition_dim": args.condition[-1], "condition_tokens": args.condition[0]}
    model = ConditionedDiT(**args_model, gradient_checkpointing=True).to(device).train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1.6e-4, weight_decay=0.03, fused=device == "cuda")
    g = torch.Generator().manual_seed(0)

    def step(b: dict) -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = task.loss(model, model, b, torch.Generator().manual_seed(1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    # Model FLOPs of one sample's forward + backward (no recompute), counted on 2 samples.
    counted = ConditionedDiT(**args_model, gradient_checkpointing=False).to(device)
    with FlopCounterMode(display=False) as fc, torch.autocast(device, dtype=torch.bfloat16):
        task.loss(counted, counted, batch(2, args.latent, args.condition, device, g),
                  torch.Generator().manual_seed(1)).backward()
    flops = fc.get_total_flops() / 2 * args.micro_batch
    del counted

    data = batch(args.micro_batch, args.latent, args.condition, device, g)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step(data)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(data)
    sync()
    step_s = (time.perf_counter() - t0) / args.steps
    tflops = flops / step_s / 1e12
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    print(f"{args.variant} ({params / 1e6:.2f} M params) on {name}: micro-batch {args.micro_batch}, "
          f"{flops / 1e12:.2f} TFLOP/step, peak memory {mem:.1f} GiB")
    print(f"RESULT step_s={step_s:.4f} samples_per_s={args.micro_batch / step_s:.1f} tflops={tflops:.1f} "
          f"mfu={tflops / args.peak_tflops:.4f}")


if __name__ == "__main__":
    main()
