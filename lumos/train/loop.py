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
from lumos.train.probe import due, ema_weights
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
    keep_last: int | None = None  # finished checkpoints kept (older ones deleted); None: all
    loader_workers: int = 2  # DataLoader workers per rank for streamed data


def step_generator(seed: int, step: int, micro: int, rank: int = 0) -> torch.Generator:
    """The generator of one micro-batch: each rank draws different samples and noise."""
    return torch.Generator().manual_seed(hash((seed, step, micro, rank)) & (2**63 - 1))


def _batch_indices(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (size,), generator=g)


def latest_checkpoint(out: Path) -> Path | None:
    done = sorted((out / "checkpoints").glob("step-*/DONE"))
    return done[-1].parent if done else None


def prune_checkpoints(out: Path, keep_last: int | None) -> list[Path]:
    """Delete all but the newest ``keep_last`` finished checkpoints (rank 0); unfinished ones
    older than the newest finished one go too. Returns what was removed."""
    if keep_last is None:
        return []
    done = [p.parent for p in sorted((out / "checkpoints").glob("step-*/DONE"))]
    keep = set(done[-keep_last:])
    newest = done[-1].name if done else ""
    gone = [p for p in sorted((out / "checkpoints").glob("step-*"))
            if p not in keep and p.name < newest]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def broadcast(value):
    """Rank 0's ``value`` on every rank (the resume decision is made once)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def to_universal(ckpt: Path) -> Path:
    """DeepSpeed's universal checkpoint of ``ckpt`` (made once, by rank 0): the ZeRO optimizer
    state merged per parameter, loadable under any world size (ds_to_universal)."""
    from argparse import Namespace

    import torch.distributed as dist
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    target = ckpt / "deepspeed" / UNIVERSAL_TAG
    if rank() == 0 and not (target / "DONE").exists():
        shutil.rmtree(target, ignore_errors=True)
        # Its command-line arguments; one worker each: the conversion runs in this process.
        ds_to_universal(Namespace(input_folder=str(ckpt / "deepspeed" / "state"), output_folder=str(target),
                                  num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                                  strict=True, inject_missing_state=True))
        (target / "DONE").write_text("")
    if dist.is_initialized():
        dist.barrier()
    return target


UNIVERSAL_TAG = "universal"


def save_checkpoint(engine, ema: EMA, out: Path, step: int, config: dict, losses: list[float],
                    loader: dict | None = None, keep_last: int | None = None) -> Path:
    """model.safetensors + ema.safetensors + config.json + losses.json (rank 0 alone), and
    DeepSpeed's optimizer and scheduler state for resume (every rank its own partition); the DONE
    marker is written last, so a half-written checkpoint is never resumed from. ``loader`` (the
    streamed input's position) goes into config.json."""
    import torch.distributed as dist

    ckpt = out / "checkpoints" / f"step-{step:07d}"
    if rank() == 0:
        shutil.rmtree(ckpt, ignore_errors=True)
        ckpt.mkdir(parents=True)
        module = engine.module
        save_file({k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()},
                  str(ckpt / "model.safetensors"))
        save_file({k: v.contiguous().cpu() for k, v in ema.state_dict().items()}, str(ckpt / "ema.safetensors"))
        (ckpt / "config.json").write_text(json.dumps({**config, "step": step, "loader": loader},
                                                     indent=1, sort_keys=True))
        (ckpt / "losses.json").write_text(json.dumps(losses))
    dist.barrier()
    engine.save_checkpoint(str(ckpt / "deepspeed"), tag="state", client_state={"step": step})
    dist.barrier()
    if rank() == 0:
        (ckpt / "DONE").write_text(str(step))
        prune_checkpoints(out, keep_last)
    dist.barrier()
    return ckpt


def _trace(path: str | None, step: int, samples: torch.Tensor) -> None:
    """Append this rank's sample ids (LUMOS_SAMPLE_TRACE, a folder outside the run: for tests)."""
    if path:
        with open(Path(path) / f"rank-{rank()}.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "samples": samples.tolist()}) + "\n")


def train(task: Task, spec: RunSpec, out_dir: Path | str, config: dict,
          stop_after: int | None = None, log_dir: Path | str | None = None,
          log_step_offset: int = 0, probe=None, probe_every: int | None = None) -> dict:
    """Train ``task`` for ``spec.steps`` optimizer steps into ``out_dir`` (resuming if possible).

    ``stop_after`` ends the run early after that step (as a kill would, but cleanly), for tests.
    ``log_step_offset`` continues another run's curves in ``log_dir`` (progressive T2I stages).
    ``probe(model) -> {name: value}`` (lumos.train.probe) runs on the EMA weights at every
    ``probe_every``-th saved checkpoint and the last (rank 0), logged beside the loss.
    Returns the per-step losses of the whole run (resumed ones included) and the final step.

    A task whose ``data`` has ``loader`` (lumos.data.stream) is streamed: each rank reads its own
    shards through a DataLoader, and the loader position is saved with every checkpoint.
    Otherwise batch indices are drawn from the step's generator (in-memory data).
    """
    import os

    import deepspeed
    from dvclive import Live

    out = Path(out_dir)
    init_distributed()
    torch.manual_seed(spec.seed)
    model = task.build_model()
    resume = broadcast(latest_checkpoint(out) if rank() == 0 else None)  # rank 0 decides
    layout = {"zero_stage": spec.zero_stage, "world_size": world_size()}
    saved_layout = json.loads((resume / "config.json").read_text()).get("deepspeed") if resume else None
    # Another world size: the ZeRO partitions are re-cut from DeepSpeed's universal checkpoint.
    universal = resume is not None and saved_layout != layout
    ds_config = deepspeed_config(spec.global_batch, spec.micro_batch, spec.optimizer,
                                 spec.precision, spec.zero_stage, world_size())
    if universal:
        ds_config["checkpoint"] = {"load_universal": True}
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=ds_config)
    ema = EMA(engine.module, spec.ema_decay)
    start, losses = 0, []
    config = {**config, "deepspeed": layout}
    accum = ds_config["gradient_accumulation_steps"]
    if resume is not None:
        if universal:
            warnings.warn(f"{resume}: saved with DeepSpeed layout {saved_layout}, now {layout}: "
                          "resuming model, optimizer and scheduler through a universal checkpoint")
            to_universal(resume)
            engine.load_checkpoint(str(resume / "deepspeed"), tag=UNIVERSAL_TAG)
        else:
            engine.load_checkpoint(str(resume / "deepspeed"), tag="state")
        ema.load_state_dict(load_file(str(resume / "ema.safetensors")))
        ema.to(next(engine.module.parameters()).device)  # the shadow lives beside the weights
        start = int((resume / "DONE").read_text())
        losses = json.loads((resume / "losses.json").read_text())
    data = getattr(task, "data", None)
    streamed = hasattr(data, "loader")
    # Every rank consumed ``accum`` micro-batches per step; under a new layout the position is
    # the same step count in the new partition of shards.
    batches = iter(data.loader(spec.micro_batch, spec.seed, start * accum, spec.loader_workers)) if streamed else None
    trace = os.environ.get("LUMOS_SAMPLE_TRACE")
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
            if streamed:
                batch = next(batches)
                _trace(trace, step, batch.pop("_sample"))
            else:
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
            position = {"micro_batches": (step + 1) * accum, "workers": spec.loader_workers,
                        "world_size": world_size()} if streamed else None
            save_checkpoint(engine, ema, out, step + 1, config, losses, position, spec.keep_last)
            if live is not None and probe is not None and due((step + 1) // spec.checkpoint_every, probe_every,
                                                              step + 1 == last):
                with ema_weights(engine.module, ema) as weights:
                    values = probe(weights)
                live.step = log_step_offset + step + 1
                for name, value in values.items():
                    live.log_metric(name, value)
                live.make_summary()
    if live is not None:
        live.end()
    return {"losses": losses, "step": last, "checkpoint": str(broadcast(latest_checkpoint(out) if lead else None))}
