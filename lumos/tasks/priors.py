"""`prior: i2i | t2i | none` (Fig. 5, Tables 4-5): which checkpoint a downstream task starts
from, and how its weights are carried over (lumos.models.transfer)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from lumos.models import CONDITION_PARAMETERS, transfer_weights
from lumos.train.loop import latest_checkpoint

PRIOR_MODELS = {"i2i": Path("models/i2i"), "t2i": Path("models/t2i")}


def t2i_final(models: Path = PRIOR_MODELS["t2i"]) -> Path | None:
    """The T2I prior is the last progressive stage's latest checkpoint."""
    stages = sorted((models / "stages").glob("stage-*"), key=lambda p: int(p.name.split("-")[1]))
    return latest_checkpoint(stages[-1]) if stages else None


def prior_checkpoint(prior: str, roots: dict[str, Path] | None = None) -> Path | None:
    """The parent checkpoint of ``prior`` (None for ``none``); a missing one is an error."""
    if prior == "none":
        return None
    roots = {**PRIOR_MODELS, **(roots or {})}
    if prior not in roots:
        raise ValueError(f"unknown prior {prior!r}: use i2i, t2i or none")
    ckpt = t2i_final(roots["t2i"]) if prior == "t2i" else latest_checkpoint(roots[prior])
    if ckpt is None:
        raise FileNotFoundError(f"prior {prior!r}: no finished checkpoint under {roots[prior]}: train it first")
    return ckpt


def condition_kind(config: dict) -> str:
    """What a checkpoint's condition tokens come from: text (T5) or vision (DINO & co.)."""
    return config.get("condition") or ("text" if config.get("task") == "t2i" else "vision")


def parent_weights(checkpoint: Path | str) -> dict[str, torch.Tensor]:
    """The parent's weights with its EMA parameters over them (what its samples use)."""
    ckpt = Path(checkpoint)
    state = load_file(str(ckpt / "model.safetensors"))
    state.update(load_file(str(ckpt / "ema.safetensors")))
    return state


def init_from(model: nn.Module, checkpoint: Path | str | None, condition: str) -> dict:
    """Initialise ``model`` from a parent checkpoint; the condition projection is re-initialised
    when the parent's condition encoder differs (DINO <-> T5). Returns the transfer report."""
    if checkpoint is None:
        return {"copied": [], "widened": [], "initialised": ["*"]}
    config = json.loads((Path(checkpoint) / "config.json").read_text())
    reinit = CONDITION_PARAMETERS if condition_kind(config) != condition else ()
    return transfer_weights(parent_weights(checkpoint), model, reinit)
