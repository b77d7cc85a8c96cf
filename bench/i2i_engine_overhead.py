"""Benchmark: the cost per step of lumos's training machinery against a bare PyTorch loop.

Both sides train the same ConditionedDiT (``--variant``, default tiny; torch seed = the run's
seed) with the same ``I2ITask.loss`` on the same cached features, drawing the same batches,
noise and condition dropout from ``step_generator(seed, step, micro)``:

  engine  ``lumos.train.loop.train()``: gloo process group, DeepSpeed (the profile's ZeRO
          stage, precision, AdamW + WarmupLR, grad clipping, accumulation), EMA, tqdm, dvclive
          (``log_every`` from the profile); ``checkpoint_every`` > steps, so only the final
          checkpoint is written
  bare    a plain loop: ``torch.optim.AdamW``, the same accumulation (loss / accum), grad
          clipping and linear warm-up (LambdaLR); no EMA, no logging, no checkpoint

Features: one synthetic shard (``write_feature_shard``, torch seed 0) of ``--samples`` samples,
latent (C,S,S), condition (M,d) (default: the tiny profile's (4,8,8), (1,32)). Batch sizes, lr,
warm-up, ZeRO stage, precision, gradient checkpointing: the active profile's ``train``.

Timing (both sides alike): the task is wrapped so that ``batch()`` stamps the start of each
step's micro-step 0; time per step = (start of the last step - start of step ``--warmup``) /
(steps - 1 - warmup). So warm-up steps, set-up and the last step with its final checkpoint
are excluded. Each side runs in its own subprocess (``train()`` initialises torch.distributed)
with ``--threads`` torch threads. Target: engine overhead <= 10 %.

    .venv/bin/python bench/i2i_engine_overhead.py --steps 15 --warmup 3      # quick check
    .venv/bin/python bench/i2i_engine_overhead.py                            # 100 steps
    .venv/bin/python bench/i2i_engine_overhead.py --latent 4 16 16 --variant B/2 --steps 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


class Timed:
    """A Task that forwards to ``task`` and stamps the start of every optimizer step."""

    def __init__(self, task, accum: int) -> None:
        self.task, self.accum, self.calls, self.stamps = task, accum, 0, []
        self.name, self.build_model, self.loss, self.num_samples = (
            task.name, task.build_model, task.loss, task.num_samples)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.calls % self.accum == 0:
            self.stamps.append(time.perf_counter())
        self.calls += 1
        return self.task.batch(indices)


def bare(task: Timed, spec, accum: int) -> list[float]:
    """The plain PyTorch loop over the same batches as ``train()``."""
    from lumos.train.loop import _batch_indices, step_generator

    torch.manual_seed(spec.seed)
    model = task.build_model().train()
    o = spec.optimizer  # as in lumos.train.engine.deepspeed_config: AdamW, WarmupLR, clipping
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / max(o.warmup_steps, 1)))
    losses = []
    for step in range(spec.steps):
        step_loss = 0.0
        for micro in range(accum):
            g = step_generator(spec.seed, step, micro)
            batch = task.batch(_batch_indices(task.num_samples(), spec.micro_batch, g))
            loss = task.loss(model, model, batch, g)
            (loss / accum).backward()
            step_loss += loss.item() / accum
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
    return losses


def measure(side: str, args: argparse.Namespace, work: Path) -> dict:
    from lumos.config import load_profile
    from lumos.data.features import FeatureShards, write_feature_shard
    from lumos.diffusion import GaussianDiffusion
    from lumos.tasks.i2i import I2ITask
    from lumos.tasks.i2i_stages import run_spec
    from lumos.train.loop import train

    torch.set_num_threads(args.threads)
    profile = load_profile(PARAMS)
    shard = work / "features" / "bench.safetensors"
    if not shard.exists():
        g = torch.Generator().manual_seed(0)
        n, (c, s, _), (m, d) = args.samples, args.latent, args.condition
        write_feature_shard(shard, [str(i) for i in range(n)], {
            "latent_mean": torch.randn(n, c, s, s, generator=g),
            "latent_std": torch.rand(n, c, s, s, generator=g) * 0.1,
            "condition": torch.randn(n, m, d, generator=g)}, meta={})
    task = I2ITask(FeatureShards(shard.parent), args.variant, profile.model.condition_dropout,
                   GaussianDiffusion(profile.diffusion.train_steps), profile.train.gradient_checkpointing)
    spec = replace(run_spec(profile), steps=args.steps, checkpoint_every=args.steps + 1)
    accum = spec.global_batch // spec.micro_batch  # one process
    timed = Timed(task, accum)
    losses = (train(timed, spec, work / side, config={"bench": True})["losses"] if side == "engine"
              else bare(timed, spec, accum))
    st = timed.stamps  # len(st) == args.steps
    return {"side": side, "per_step_s": (st[-1] - st[args.warmup]) / (len(st) - 1 - args.warmup),
            "loss_first": losses[0], "loss_last": losses[-1], "accum": accum,
            "spec": {k: getattr(spec, k) for k in ("global_batch", "micro_batch", "zero_stage", "log_every")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="tiny", choices=["tiny", "B/2", "L/2", "XL/2"])
    ap.add_argument("--latent", type=int, nargs=3, default=[4, 8, 8], metavar=("C", "S", "S"))
    ap.add_argument("--condition", type=int, nargs=2, default=[1, 32], metavar=("M", "D"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per child")
    ap.add_argument("--measure", choices=["engine", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps < args.warmup + 2:
        ap.error("--steps must be at least --warmup + 2")
    if args.measure:
        return print(json.dumps(measure(args.measure, args, args.work)))
    res = {}  # the children's stderr (tqdm, DeepSpeed warnings) passes through
    with tempfile.TemporaryDirectory(prefix="enginebench-") as tmp:
        for side in ("bare", "engine"):
            cmd = [sys.executable, __file__, "--measure", side, "--work", tmp] + sys.argv[1:]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            res[side] = json.loads(out.strip().splitlines()[-1])
    (b, e), over = res.values(), res["engine"]["per_step_s"] / res["bare"]["per_step_s"] - 1
    print(f"variant {args.variant}, latent {tuple(args.latent)}, condition {tuple(args.condition)}, {e['spec']}, "
          f"accum {e['accum']}, {args.steps} steps ({args.steps - 1 - args.warmup} timed), {args.threads} thread(s)")
    print(f"\n{'side':7} {'ms/step':>8} {'loss first':>11} {'loss last':>10}")
    for r in (b, e):
        print(f"{r['side']:7} {r['per_step_s'] * 1e3:8.2f} {r['loss_first']:11.4f} {r['loss_last']:10.4f}")
    print(f"\nengine overhead = {over:+.1%} per step (target <= 10%: {'met' if over <= 0.10 else 'not met'})")


if __name__ == "__main__":
    main()
