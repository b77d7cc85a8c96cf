"""The `device` setting (auto | cpu | cuda) and the precision params, applied to a model.

`auto` takes the GPU when there is one. Precision follows the stage's params
(`features.precision`, `captioner.precision`, `text_encoder.precision`); on a CPU, fp16 runs as
fp32 (CPUs lack fp16 kernels for convolutions and attention), bf16 is kept.
"""

from __future__ import annotations

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(setting: str) -> str:
    """'cpu' or 'cuda' for a params value; asking for cuda without one is an error."""
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {setting!r}")
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is 'cuda' but torch sees no GPU here: set device: auto or cpu")
    return setting


def model_dtype(precision: str, device: str) -> torch.dtype:
    """The dtype a frozen model runs in for a precision param on a device."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    if device == "cpu" and precision == "fp16":
        return torch.float32
    return DTYPES[precision]


def place(module: nn.Module, device: str, precision: str = "fp32") -> nn.Module:
    """Move a model to ``device`` in the dtype ``precision`` asks for; returns it, in eval mode."""
    return module.to(device=device, dtype=model_dtype(precision, device)).eval()
