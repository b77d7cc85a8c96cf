"""Benchmark: the cost per step of lumos's training machinery against a bare PyTorch loop.

Both sides train the same ConditionedDiT (``--variant``; torch seed = the run's seed) with the
same ``I2ITask.loss``, batches, noise and dropout (``step_generator(seed, step, micro)``):

  engine  ``lumos.train.loop.train()``: gloo process group, DeepSpeed (ZeRO, AdamW + WarmupLR,
          clipping, accumulation), EMA, tqdm, dvclive; ``checkpoint_every`` > steps, so only
          the final checkpoint is written
  bare    a plain loop: ``torch.optim.AdamW``, the same accumulation (loss / accum), clipping
          and linear warm-up (LambdaLR); no EMA, no logging, no checkpoint

Features: a synthetic shard (``write_feature_shard``), latent (C,S,S), condition (M,d) (tiny's
(4,8,8), (1,32)); batches, lr, ZeRO (or ``--zero-stage``), log_every...: the profile's ``train``.

Timing (both alike): a wrapper's ``batch()`` stamps the start of each step's micro-step 0; per
step = (start of the last step - start of step ``--warmup``) / (steps - 1 - warmup), so set-up,
warm-up and the last step with its final checkpoint are excluded. Each run is a subprocess
(``train()`` initialises torch.distributed) with ``--threads`` threads; the sides alternate
``--repeats`` times and each keeps its best run (shared machine). Target: overhead <= 10 %.

    .venv/bin/python bench/i2i_engine_overhead.py --steps 15 --warmup 3      # quick check
    .venv/bin/python bench/i2i_engine_overhead.py                            # 100 steps
    .venv/bin/python bench/i2i_engine_overhead.py --latent 4 16 16 --variant B/2 --steps 20
"""

from __future__ import annotations

import argparse
import itertools
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
    spec = replace(run_spec(profile), steps=args.steps, checkpoint_every=args.steps + 1,
                   zero_stage=profile.train.zero_stage if args.zero_stage is None else args.zero_stage)
    accum = spec.global_batch // spec.micro_batch  # one process
    timed = Timed(task, accum)
    losses = (train(timed, spec, tempfile.mkdtemp(dir=work), config={})["losses"] if side == "engine"
              else bare(timed, spec, accum))
    st, keys = timed.stamps, ("global_batch", "micro_batch", "zero_stage", "precision", "log_every")
    return {"per_step_s": (st[-1] - st[args.warmup]) / (len(st) - 1 - args.warmup), "losses": losses,
            "spec": {k: getattr(spec, k) for k in keys}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="tiny", choices=["tiny", "B/2", "L/2", "XL/2"])
    ap.add_argument("--latent", type=int, nargs=3, default=[4, 8, 8], metavar=("C", "S", "S"))
    ap.add_argument("--condition", type=int, nargs=2, default=[1, 32], metavar=("M", "D"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5, help="untimed first steps (< steps - 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per child")
    ap.add_argument("--repeats", type=int, default=3, help="runs per side (alternating); best is kept")
    ap.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], help="default: the profile's")
    ap.add_argument("--measure", choices=["engine", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return print(json.dumps(measure(args.measure, args, args.work)))
    res = {"bare": [], "engine": []}  # the children's stderr (tqdm, warnings) passes through
    with tempfile.TemporaryDirectory(prefix="enginebench-") as tmp:
        for _, side in itertools.product(range(args.repeats), res):  # alternate the two sides
            cmd = [sys.executable, __file__, "--measure", side, "--work", tmp] + sys.argv[1:]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            res[side].append(json.loads(out.strip().splitlines()[-1]))
    print(f"variant {args.variant}, latent {tuple(args.latent)}, condition {tuple(args.condition)}, "
          f"{res['engine'][0]['spec']}, {args.steps} steps ({args.steps - 1 - args.warmup} timed), {args.threads} thread(s)")
    print(f"\n{'side':7} {'best ms/step':>12} {'all runs':>24} {'loss first':>11} {'loss last':>10}")
    best = {side: min(r["per_step_s"] for r in runs) for side, runs in res.items()}
    for side, runs in res.items():
        every, loss = " ".join(f"{r['per_step_s'] * 1e3:.1f}" for r in runs), runs[0]["losses"]
        print(f"{side:7} {best[side] * 1e3:12.2f} {every:>24} {loss[0]:11.4f} {loss[-1]:10.4f}")
    over = best["engine"] / best["bare"] - 1
    print(f"\nengine overhead = {over:+.1%} per step, best run of {args.repeats} each "
          f"(target <= 10%: {'met' if over <= 0.10 else 'not met'})")


if __name__ == "__main__":
    main()
