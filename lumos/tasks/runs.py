"""What every task's train stage does around the shared loop: resume only a run of the same
config, skip a finished one, and write a summary DVC reads as metrics."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lumos.config import FineTune
from lumos.io import atomic_write_text
from lumos.train.engine import init_distributed
from lumos.train.loop import RunSpec, Task, broadcast, latest_checkpoint, train

_VOLATILE = ("step", "schedule", "deepspeed", "loader")  # may differ between a run and its resumption


def resumable(out: Path, config: dict) -> bool:
    """A checkpoint may be resumed only by a run of the same config (the step count aside)."""
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return False
    saved = json.loads((ckpt / "config.json").read_text())
    keep = lambda c: {k: v for k, v in c.items() if k not in _VOLATILE}  # noqa: E731
    return keep(saved) == keep(json.loads(json.dumps(config)))


def finished(out: Path, config: dict, steps: int) -> bool:
    ckpt = latest_checkpoint(out)
    return ckpt is not None and resumable(out, config) and int((ckpt / "DONE").read_text()) >= steps


def fine_tune_spec(ft: FineTune, seed: int) -> RunSpec:
    return RunSpec(steps=ft.steps, global_batch=ft.global_batch, micro_batch=ft.micro_batch,
                   optimizer=ft.optimizer, precision=ft.precision, zero_stage=ft.zero_stage,
                   ema_decay=ft.ema_decay, seed=seed, checkpoint_every=ft.checkpoint_every,
                   log_every=ft.log_every)


def summarise(losses: list[float], step: int, checkpoint: str, **extra) -> dict:
    k = max(1, len(losses) // 5)
    return {"steps": step, "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k,
            "checkpoint": checkpoint, **extra}


def fit(task: Task, spec: RunSpec, out: Path, config: dict, stop_after: int | None = None,
        log_dir: Path | None = None, log_step_offset: int = 0, probe=None, probe_every: int | None = None) -> dict:
    """Train ``task`` into ``out`` (resuming a run of the same config, else starting afresh)."""
    import torch.distributed as dist

    init_distributed()
    # Rank 0 decides and removes a stale run folder (another config: start afresh rather than
    # resume a different run); the others wait behind the barrier before looking for checkpoints.
    if broadcast(_rank() == 0 and out.exists() and not resumable(out, config)) and _rank() == 0:
        shutil.rmtree(out)
    dist.barrier()
    result = train(task, spec, out, config, stop_after=stop_after, log_dir=log_dir,
                   log_step_offset=log_step_offset, probe=probe, probe_every=probe_every)
    return summarise(result["losses"], result["step"], result["checkpoint"])


def _rank() -> int:
    """This process's rank (launcher env before the process group exists, else the group's)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def write_summary(path: Path, summary: dict) -> dict:
    """Rank 0 writes (every rank has its own losses; the first rank's are the record)."""
    if _rank() == 0:
        atomic_write_text(path, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def fine_tune_config(task: str, model_class: str, model_args: dict, ft: FineTune, profile, data: dict,
                     lineage: dict) -> dict:
    """The config.json of a fine-tuning run from a vision-conditioned prior (NVS, I2V)."""
    return {"task": task, "condition": "vision", "model_class": model_class, "model_args": model_args,
            "train": ft.model_dump(exclude={"steps", "checkpoint_every", "log_every"}),
            "schedule": {"steps": ft.steps}, "diffusion": profile.diffusion.model_dump(),
            "encoders": {"vae": profile.vae.model_dump(), "vision_encoder": profile.vision_encoder.model_dump()},
            "data": data, "lineage": lineage}


def run_fine_tune(task, ft: FineTune, profile, out: Path, config: dict, stop_after: int | None = None) -> dict:
    """Train a transfer task with its FineTune schedule; summary.json names the prior and what
    the weight transfer copied."""
    summary = fit(task, fine_tune_spec(ft, profile.train.seed), out, config, stop_after=stop_after)
    summary.update(prior=ft.prior, transfer={k: len(v) for k, v in task.transfer.items()})
    return write_summary(out / "summary.json", summary)
