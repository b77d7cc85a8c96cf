"""Importing the authors' released checkpoints (ant-research/lumos: Lumos-I2I, Lumos-T2I) and
diffusers-format PixArt-alpha transformers into this project's checkpoint layout:

    <out>/checkpoints/step-0000000/{model,ema}.safetensors, config.json, DONE

so that sampling stages and every transfer stage (`prior: <out>`) start from them.

The `lumos` backbone keeps the release's module names, so the conversion is a rename table:
every released key gains the wrapper's ``transformer.`` prefix, except the learned null
condition (the release's ``y_embedder.y_embedding`` buffer) which is the wrapper's
``null_condition``. The geometry (depth, width, patch, channels, condition width and tokens,
learned variance, size conditioning) is read off the tensors' shapes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from lumos.models.dit import VARIANTS, ConditionedDiT

# released key -> this project's key; anything else: "transformer." + key
RENAMES = {"y_embedder.y_embedding": "null_condition"}
PREFIX = "transformer."
# which release is which task (T2I checkpoints are T5-conditioned: 4096 wide, 120 tokens)
RELEASES = {"lumos-i2i": {"task": "i2i", "condition": "vision"},
            "lumos-t2i": {"task": "t2i", "condition": "text"}}
STATE_KEYS = ("state_dict_ema", "ema", "state_dict", "model")  # where a training .pth keeps weights


def rename(key: str) -> str:
    return RENAMES.get(key, PREFIX + key)


def unwrap(obj: dict) -> dict[str, torch.Tensor]:
    """The state dict inside a released .pth (raw, or under one of STATE_KEYS; EMA preferred)."""
    for key in STATE_KEYS:
        if isinstance(obj.get(key), dict):
            return obj[key]
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ValueError(f"no state dict in this checkpoint (top-level keys: {sorted(obj)[:10]})")


def _variant(depth: int, width: int, patch: int) -> str:
    for name, spec in VARIANTS.items():
        if (spec["num_layers"], spec["num_attention_heads"] * spec["attention_head_dim"], spec["patch_size"]) == \
                (depth, width, patch):
            return name
    raise ValueError(f"no model variant with depth {depth}, width {width}, patch {patch}; "
                     f"known: {sorted(VARIANTS)}")


def lumos_model_args(state: dict[str, torch.Tensor]) -> dict:
    """ConditionedDiT arguments of a released-layout state dict, read off its shapes."""
    try:
        proj = state["x_embedder.proj.weight"]  # (width, C_in, p, p)
        width, channels, patch = proj.shape[0], proj.shape[1], proj.shape[2]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        out = state["final_layer.linear.weight"].shape[0] // (patch * patch)
        null = state["y_embedder.y_embedding"]  # (tokens, condition width)
        grid = math.isqrt(state["pos_embed"].shape[1])
    except (KeyError, ValueError) as e:
        raise ValueError(f"not a Lumos (released layout) state dict: missing {e}") from e
    if out not in (channels, 2 * channels):
        raise ValueError(f"final layer has {out} channels for {channels} input channels")
    return {"variant": _variant(depth, width, patch), "latent_channels": channels, "latent_size": grid * patch,
            "condition_dim": null.shape[1], "condition_tokens": null.shape[0], "backbone": "lumos",
            "learn_sigma": out == 2 * channels, "size_conditioning": "csize_embedder.mlp.0.weight" in state}


def convert_lumos(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """A released-layout state dict -> (this project's state dict, model_args). Every released
    key must land on a model key of the same shape, and every model key must be filled."""
    args = lumos_model_args(state)
    with torch.device("meta"):
        target = ConditionedDiT(**args).state_dict()
    converted, unused = {}, []
    for key, tensor in state.items():
        name = rename(key)
        if name not in target:
            unused.append(key)
        elif target[name].shape != tensor.shape:
            raise ValueError(f"{key}: released shape {tuple(tensor.shape)}, model {tuple(target[name].shape)}")
        else:
            converted[name] = tensor.detach().float().contiguous()
    missing = sorted(set(target) - set(converted))
    if unused or missing:
        raise ValueError(f"state dict does not match the lumos backbone: unused released keys {unused[:8]}, "
                         f"model keys without a value {missing[:8]}")
    return converted, args


def pixart_model_args(config: dict, variant: str | None = None) -> dict:
    """ConditionedDiT arguments of a diffusers PixArtTransformer2DModel config."""
    width = config["num_attention_heads"] * config["attention_head_dim"]
    channels, out = config["in_channels"], config.get("out_channels") or config["in_channels"]
    return {"variant": variant or _variant(config["num_layers"], width, config["patch_size"]),
            "latent_channels": channels, "latent_size": config["sample_size"],
            "condition_dim": config["caption_channels"], "condition_tokens": 120, "backbone": "pixart",
            "learn_sigma": out == 2 * channels}


def write_checkpoint(state: dict[str, torch.Tensor], config: dict, out: Path | str) -> Path:
    """``out``/checkpoints/step-0000000 with model = EMA = ``state``, written to a temporary
    folder and renamed into place (a half-written import is never found)."""
    ckpt = Path(out) / "checkpoints" / "step-0000000"
    tmp = ckpt.with_name(f".{ckpt.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {k: v.contiguous() for k, v in state.items()}
    save_file(tensors, str(tmp / "model.safetensors"))
    save_file(tensors, str(tmp / "ema.safetensors"))
    (tmp / "config.json").write_text(json.dumps({**config, "step": 0}, indent=1, sort_keys=True))
    (tmp / "DONE").write_text("0")
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)
    return ckpt


def import_release(release: str, path: Path | str, out: Path | str) -> Path:
    """`lumos import-checkpoint`: a released .pth (loaded with weights_only=True) -> ``out``."""
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; known: {sorted(RELEASES)}")
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    state, args = convert_lumos(unwrap(obj))
    config = {**RELEASES[release], "model_class": "dit", "model_args": args,
              "source": {"release": release, "path": str(path)}}
    return write_checkpoint(state, config, out)
