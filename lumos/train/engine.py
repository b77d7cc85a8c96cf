"""DeepSpeed set-up from params: one process on this CPU (gloo), or many through the launcher.

On a machine without CUDA, DeepSpeed would JIT-compile a shared-memory comm op (~1 min) and a
fused Adam (~1.5 min) on first start (DESIGN 6): the first is skipped by marking it
incompatible before ``init_distributed``, the second by ``torch_adam`` in the optimizer params.
"""

from __future__ import annotations

import os
import socket

import torch

from lumos.config import Optimizer

# Pick the accelerator explicitly so DeepSpeed does not probe for one.
os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MPI_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "MV2_COMM_WORLD_RANK")


def init_distributed() -> None:
    """Join (or, alone, create) the process group: the launcher's env vars, else rank 0 of 1."""
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        return
    # Under mpirun / srun, DeepSpeed discovers ranks from the MPI or Slurm variables: only a
    # process started alone gets the rank-0-of-1 defaults.
    if not any(k in os.environ for k in MPI_RANK_VARIABLES):
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                           ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__ = {"deepspeed_shm_comm": False}  # no JIT build on CPU
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo",
                               verbose=False)


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_initialized() else 1


def deepspeed_config(global_batch: int, micro_batch: int, optimizer: Optimizer, precision: str,
                     zero_stage: int, world: int) -> dict:
    """The engine's JSON config: batch split, ZeRO, mixed precision, AdamW + linear warm-up."""
    # ZeRO partitions optimizer state and gradients across ranks. Kept on one process too (its
    # bucketing costs a few copies, bench/i2i_engine_overhead.py) so that every checkpoint has
    # the ZeRO layout DeepSpeed's universal checkpoint converts: a run resumes on any world size.
    if global_batch % (micro_batch * world):
        raise ValueError(f"global_batch {global_batch} is not a multiple of micro_batch "
                         f"{micro_batch} x world size {world}")
    return {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": global_batch // (micro_batch * world),
        "gradient_clipping": optimizer.grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16},
        "bf16": {"enabled": precision == "bf16"},
        "optimizer": {"type": "AdamW", "params": {
            "lr": optimizer.lr, "weight_decay": optimizer.weight_decay, "betas": [0.9, 0.999],
            "eps": 1e-8, "torch_adam": True}},
        # Supplement H.1: constant lr after a linear warm-up.
        "scheduler": {"type": "WarmupLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": optimizer.lr,
            "warmup_num_steps": max(optimizer.warmup_steps, 1), "warmup_type": "linear"}},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
