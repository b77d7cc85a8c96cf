"""Benchmark: streamed training input (lumos.data.stream) against the in-memory FeatureShards.

  rss    peak RSS of an I2I training run (``train()``, the profile's ``train`` schedule, tiny
         model) over a 1x and a 10x synthetic feature cache of the tiny shapes (latent (4,8,8),
         condition (1,32); ``--samples`` per 1x, ``--shard`` samples per shard): the training
         process's peak plus its largest DataLoader worker's. Target: 10x / 1x <= 1.2.
  speed  optimizer steps/s on the 1x cache, streamed (``--workers`` DataLoader workers) against
         the in-memory reader of today (indices drawn per step); steps after ``--warmup`` are
         timed from a stamp in the task's loss at each step's first micro-step. The two alternate
         ``--repeats`` times and each keeps its best (shared machine). Target: >= 0.9.

Each run is a subprocess (``train()`` initialises torch.distributed). The last line is

    RESULT rss_ratio=<10x/1x peak RSS, streamed> speed_ratio=<streamed/in-memory steps/s>

    .venv/bin/python bench/train_input.py                       # defaults (a few minutes)
    .venv/bin/python bench/train_input.py --contrast            # also the in-memory RSS ratio
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"latent_mean": (4, 8, 8), "latent_std": (4, 8, 8), "condition": (1, 32)}


def write_cache(root: Path, samples: int, shard: int) -> None:
    from lumos.data.features import write_feature_shard

    g = torch.Generator().manual_seed(0)
    for s in range(0, samples, shard):
        n = min(shard, samples - s)
        write_feature_shard(root / f"{s // shard:05d}.safetensors", [f"k{s + i}" for i in range(n)],
                            {k: torch.randn(n, *shape, generator=g) for k, shape in SHAPES.items()}, {})


class Timed:
    """The I2I task, with a time stamp at the first micro-step of every optimizer step."""

    def __init__(self, task, accum: int) -> None:
        self.task, self.accum, self.calls, self.stamps = task, accum, 0, []
        self.name, self.data, self.build_model, self.batch, self.num_samples = (
            task.name, task.data, task.build_model, task.batch, task.num_samples)

    def loss(self, *args):
        if self.calls % self.accum == 0:
            self.stamps.append(time.perf_counter())
        self.calls += 1
        return self.task.loss(*args)


def child(args) -> dict:
    """One training run in this process: its steps/s and peak RSS (MiB)."""
    from lumos.config import load_params
    from lumos.data.features import FeatureShards
    from lumos.data.stream import FeatureStream
    from lumos.diffusion import GaussianDiffusion
    from lumos.tasks.i2i import I2ITask
    from lumos.tasks.i2i_stages import run_spec

    torch.set_num_threads(args.threads)
    profile = load_params(ROOT / "params.yaml").active
    spec = replace(run_spec(profile), steps=args.steps, checkpoint_every=10**9, log_every=10**9,
                   loader_workers=args.workers)
    data = FeatureStream(args.root) if args.mode == "stream" else FeatureShards(args.root)
    task = I2ITask(data, profile.model.variant, profile.model.condition_dropout,
                   GaussianDiffusion(profile.diffusion.train_steps), profile.train.gradient_checkpointing)
    timed = Timed(task, spec.global_batch // spec.micro_batch)
    from lumos.train.loop import train

    with tempfile.TemporaryDirectory() as out:
        train(timed, spec, out, {"bench": "train_input"})
    s = timed.stamps[args.warmup:]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"steps_per_s": (len(s) - 1) / (s[-1] - s[0]), "peak_rss_mib": (own + workers) / 1024}


def run(mode: str, root: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--root", str(root), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--workers", str(args.workers), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{mode:6s} {root.name:3s}: {result['steps_per_s']:.2f} steps/s, peak RSS {result['peak_rss_mib']:.0f} MiB",
          flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=8000, help="samples in the 1x cache")
    p.add_argument("--shard", type=int, default=1000, help="samples per shard")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers of the streamed runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--contrast", action="store_true", help="also the in-memory reader's RSS ratio")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    p.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        one, ten = Path(tmp) / "1x", Path(tmp) / "10x"
        write_cache(one, args.samples, args.shard)
        write_cache(ten, 10 * args.samples, args.shard)
        rss = {scale: run("stream", root, args)["peak_rss_mib"] for scale, root in (("1x", one), ("10x", ten))}
        if args.contrast:
            mem = {scale: run("memory", root, args)["peak_rss_mib"] for scale, root in (("1x", one), ("10x", ten))}
            print(f"in-memory reader: 10x/1x peak RSS {mem['10x'] / mem['1x']:.2f}")
        speed = {"stream": [], "memory": []}
        for _ in range(args.repeats):
            for mode in speed:
                speed[mode].append(run(mode, one, args)["steps_per_s"])
    print(f"RESULT rss_ratio={rss['10x'] / rss['1x']:.3f} "
          f"speed_ratio={max(speed['stream']) / max(speed['memory']):.3f}")


if __name__ == "__main__":
    main()
