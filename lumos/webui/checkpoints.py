"""Everything a demo tab needs from one checkpoint: the model (EMA weights), its frozen encoders
and its sizes, read from the checkpoint's own config.json (the profile fills in what an older
or hand-made checkpoint lacks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lumos.config import VAE, Diffusion, Profile, TextEncoder, VisionEncoder
from lumos.data.buckets import bucket_table, nearest_bucket
from lumos.encoders import build_vae, build_vision_encoder
from lumos.sample.i2i import load_model
from lumos.tasks.priors import condition_kind, t2i_final
from lumos.train.loop import latest_checkpoint

BUCKET_MULTIPLE = 16  # bucket sides: VAE downsampling (8) x DiT patch (2), as sample-t2i uses


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint folder itself, or a run folder: models/i2i (its latest checkpoint) or
    models/t2i (the last progressive stage's latest checkpoint)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    ckpt = t2i_final(path) if (path / "stages").is_dir() else latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"{path}: neither a checkpoint (config.json) nor a run folder with a "
                                "finished checkpoint: train it first or give a checkpoint folder")
    return ckpt


def _section(cls, config: dict, key: str, fallback):
    value = config.get("encoders", {}).get(key)
    return cls.model_validate(value) if value is not None else fallback


def _load(path: Path | str, kind: str) -> tuple[Path, object, dict]:
    ckpt = resolve_checkpoint(path)
    config = json.loads((ckpt / "config.json").read_text())
    if condition_kind(config) != kind:
        raise ValueError(f"{ckpt}: a {condition_kind(config)}-conditioned checkpoint "
                         f"(task {config.get('task')!r}), not a {kind}-conditioned one")
    model, _ = load_model(ckpt)
    return ckpt, model, config


@dataclass
class I2IDemo:
    checkpoint: Path
    model: object
    vae: object
    encoder: object
    resolution: int
    diffusion: Diffusion  # the checkpoint's sampler; steps and CFG come from the UI


@dataclass
class T2IDemo:
    checkpoint: Path
    model: object
    vae: object
    text_encoder: object
    buckets: list[tuple[int, int]]  # (height, width) the model can be sampled at
    default: tuple[int, int]  # the bucket nearest t2i.sample.aspect_ratios[0]
    diffusion: Diffusion


def load_i2i(path: Path | str, profile: Profile) -> I2IDemo:
    ckpt, model, config = _load(path, "vision")
    vae = build_vae(_section(VAE, config, "vae", profile.vae))
    encoder = build_vision_encoder(_section(VisionEncoder, config, "vision_encoder", profile.vision_encoder))
    resolution = config.get("train", {}).get("resolution", profile.train.resolution)
    diffusion = Diffusion.model_validate(config["diffusion"]) if "diffusion" in config else profile.diffusion
    return I2IDemo(ckpt, model, vae, encoder, int(resolution), diffusion)


def load_t2i(path: Path | str, profile: Profile) -> T2IDemo:
    from lumos.encoders.text import build_text_encoder

    ckpt, model, config = _load(path, "text")
    vae = build_vae(_section(VAE, config, "vae", profile.vae))
    text = build_text_encoder(_section(TextEncoder, config, "text_encoder", profile.text_encoder))
    last = profile.t2i.stages[-1]
    stage = config.get("stage_settings", {})
    res, multi = stage.get("resolution", last.resolution), stage.get("multi_aspect", last.multi_aspect)
    buckets = bucket_table(res, BUCKET_MULTIPLE) if multi else [(res, res)]
    ratio = profile.t2i.sample.aspect_ratios[0]
    default = nearest_bucket(round(1000 * ratio), 1000, buckets)
    diffusion = Diffusion.model_validate(config["diffusion"]) if "diffusion" in config else profile.diffusion
    return T2IDemo(ckpt, model, vae, text, buckets, default, diffusion)
