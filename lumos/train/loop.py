"""The training loop every task shares; a task differs only by its `Task` adapter and data.

Exact resume: batch indices, noise, timesteps and condition dropout of optimizer step s,
micro-step m are drawn from a generator seeded by (seed, s, m), so a run stopped at step k and
resumed replays steps k+1... exactly as an uninterrupted run would; model, EMA, optimizer and
lr-scheduler states come back from the checkpoint.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from lumos.config import Optimizer
from lumos.train.ema import EMA
from lumos.train.engine import deepspeed_config, init_distributed, rank, world_size


class Task(Protocol):
    """What a training task supplies to the loop."""

    name: str

    def build_model(self) -> nn.Module: ...

    def num_samples(self) -> int: ...

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def loss(self, forward: nn.Module, model: nn.Module, batch: dict[str, torch.Tensor],
             generator: torch.Generator) -> torch.Tensor: ...

    # Optional: ``sample_indices(size, generator)`` draws a micro-batch's indices itself (the
    # multi-aspect T2I task keeps a batch inside one aspect-ratio bucket); uniform otherwise.


@dataclass(frozen=True)
class RunSpec:
    """The schedule of one run (from a params section)."""

    steps: int
    global_batch: int
    micro_batch: int
    optimizer: Optimizer
    precision: str
    zero_stage: int
    ema_decay: float
    seed: int
    checkpoint_every: int
    log_every: int


def step_generator(seed: int, step: int, micro: int, rank: int = 0) -> torch.Generator:
    """The generator of one micro-batch: each rank draws different samples and noise."""
    return torch.Generator().manual_seed(hash((seed, step, micro, rank)) & (2**63 - 1))


def _batch_indices(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (size,), generator=g)


def latest_checkpoint(out: Path) -> Path | None:
    done = sorted((out / "checkpoints").glob("step-*/DONE"))
    return done[-1].parent if done else None


def save_checkpoint(engine, ema: EMA, out: Path, step: int, config: dict, losses: list[float]) -> Path:
    """model.safetensors + ema.safetensors + config.json (rank 0), and DeepSpeed's optimizer and
    scheduler state for resume (every rank); the DONE marker is written last, so a half-written
    checkpoint is never resumed from."""
    import torch.distributed as dist

    ckpt = out / "checkpoints" / f"step-{step:07d}"
    if rank() == 0:
        shutil.rmtree(ckpt, ignore_errors=True)
        ckpt.mkdir(parents=True)
        module = engine.module
        save_file({k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()},
                  str(ckpt / "model.safetensors"))
        save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(ckpt / "ema.safetensors"))
        (ckpt / "config.json").write_text(json.dumps({**config, "step": step}, indent=1, sort_keys=True))
        (ckpt / "losses.json").write_text(json.dumps(losses))
    dist.barrier()
    engine.save_checkpoint(str(ckpt / "deepspeed"), tag="state", client_state={"step": step})
    dist.barrier()
    if rank() == 0:
        (ckpt / "DONE").write_text(str(step))
    return ckpt


def train(task: Task, spec: RunSpec, out_dir: Path | str, config: dict,
          stop_after: int | None = None, log_dir: Path | str | None = None,
          log_step_offset: int = 0) -> dict:
    """Train ``task`` for ``spec.steps`` optimizer steps into ``out_dir`` (resuming if possible).

    ``stop_after`` ends the run early after that step (as a kill would, but cleanly), for tests.
    ``log_step_offset`` continues another run's curves in ``log_dir`` (progressive T2I stages).
    Returns the per-step losses of the whole run (resumed ones included) and the final step.
    """
    import deepspeed
    from dvclive import Live

    out = Path(out_dir)
    init_distributed()
    torch.manual_seed(spec.seed)
    model = task.build_model()
    ds_config = deepspeed_config(spec.global_batch, spec.micro_batch, spec.optimizer,
                                 spec.precision, spec.zero_stage, world_size())
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=ds_config)
    ema = EMA(engine.module, spec.ema_decay)
    start, losses = 0, []
    layout = {"zero_stage": ds_config["zero_optimization"]["stage"], "world_size": world_size()}
    config = {**config, "deepspeed": layout}
    resume = latest_checkpoint(out)
    if resume is not None:
        saved = json.loads((resume / "config.json").read_text()).get("deepspeed")
        # The optimizer state is laid out per ZeRO stage and world size: with another layout,
        # keep weights, EMA and step but start the optimizer afresh (said loudly).
        same_layout = saved == layout
        if not same_layout:
            warnings.warn(f"{resume}: saved with DeepSpeed layout {saved}, now {layout}: "
                          "resuming weights and EMA only, the optimizer state starts afresh")
        engine.load_checkpoint(str(resume / "deepspeed"), tag="state", load_module_only=not same_layout)
        ema.load_state_dict(load_file(str(resume / "ema.safetensors")))
        start = int((resume / "DONE").read_text())
        losses = json.loads((resume / "losses.json").read_text())
    accum = ds_config["gradient_accumulation_steps"]
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(spec.precision, torch.float32)
    lead = rank() == 0  # rank 0 logs and shows progress
    live = Live(str(log_dir or out / "dvclive"), resume=resume is not None or log_step_offset > 0, dvcyaml=False,
                save_dvc_exp=False, report=None) if lead else None  # dvc.yaml declares the plots
    last = spec.steps if stop_after is None else min(spec.steps, stop_after)
    bar = tqdm(range(start, last), initial=start, total=spec.steps, desc=f"train {task.name}",
               dynamic_ncols=True, disable=not lead)
    for step in bar:
        step_loss = 0.0
        for micro in range(accum):
            g = step_generator(spec.seed, step, micro, rank())
            draw = getattr(task, "sample_indices", None)
            indices = draw(spec.micro_batch, g) if draw else _batch_indices(task.num_samples(), spec.micro_batch, g)
            batch = task.batch(indices)
            batch = {k: v.to(engine.device, dtype if v.is_floating_point() else v.dtype)
                     for k, v in batch.items()}
            loss = task.loss(engine, engine.module, batch, g)
            engine.backward(loss)
            engine.step()
            step_loss += loss.item() / accum
        ema.update(engine.module)
        losses.append(step_loss)
        if live is not None and ((step + 1) % spec.log_every == 0 or step + 1 == last):
            window = losses[-(step % spec.log_every + 1):]
            bar.set_postfix(loss=f"{step_loss:.4f}")
            live.step = log_step_offset + step + 1
            live.log_metric("train/loss", sum(window) / len(window))  # mean since the last log
            live.log_metric("train/lr", engine.get_lr()[0])
            live.make_summary()
        if (step + 1) % spec.checkpoint_every == 0 or step + 1 == last:
            save_checkpoint(engine, ema, out, step + 1, config, losses)
    if live is not None:
        live.end()
    return {"losses": losses, "step": last, "checkpoint": str(latest_checkpoint(out))}
