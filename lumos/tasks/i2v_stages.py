"""Lumos-I2V's stages (supplement G.4, H.4): clip features -> fine-tuning -> clips.

    datasets/features/i2v/   per clip shard: every frame's VAE latent, first-frame tokens
    models/i2v/              checkpoints, dvclive, summary.json
    samples/i2v/             <key>.mp4 / <key>.gif / <key>.npy (generated frames), manifest.json
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import numpy as np

from lumos.config import Profile
from lumos.data.features import FeatureShards
from lumos.data.stream import FeatureStream
from lumos.data.i2v import extract_i2v_features
from lumos.diffusion import GaussianDiffusion
from lumos.encoders import build_vae
from lumos.models import backbone_args
from lumos.io import atomic_write_bytes
from lumos.sample.i2i import load_model
from lumos.sample.i2v import image_to_video_latents, write_clip
from lumos.tasks.i2i_stages import build_encoders
from lumos.tasks.i2v import I2VTask
from lumos.tasks.priors import prior_checkpoint
from lumos.tasks.runs import fine_tune_config, run_fine_tune, write_summary
from lumos.train.lineage import lineage
from lumos.train.loop import latest_checkpoint
from lumos.video.stages import clips_location

CLIPS = Path("datasets/clips/webvid")  # the defaults of storage.clips + /webvid, storage.features + /i2v
FEATURES = Path("datasets/features/i2v")
MODELS = Path("models/i2v")
SAMPLES = Path("samples/i2v")


def features_location(profile: Profile) -> str:
    """``storage.features``/i2v: the local default or a bucket URL."""
    return f"{profile.storage.features.rstrip('/')}/i2v"


def run_features(profile: Profile, clips: Path | str | None = None, out: Path | str | None = None,
                 on_shard=None) -> dict:
    """features-i2v on Ray (params ``ray``), on the params' device and features.precision."""
    clips, out = clips or clips_location(profile), out or features_location(profile)
    fingerprint = {"vae": profile.vae.model_dump(), "vision_encoder": profile.vision_encoder.model_dump(),
                   "frames": profile.i2v.frames, "resolution": profile.i2v.resolution}
    return extract_i2v_features(clips, out, partial(build_encoders, profile.vae, profile.vision_encoder),
                                fingerprint, device=profile.device, precision=profile.features.precision,
                                ray=profile.ray, on_shard=on_shard)


def run_train(profile: Profile, features: Path | str | None = None, out: Path = MODELS,
              prior_roots: dict | None = None, stop_after: int | None = None) -> dict:
    ft = profile.i2v.train
    features = features or features_location(profile)
    data = FeatureStream(features)
    mean, cond = data.shapes["latent_mean"], data.shapes["condition"]  # (F,C,h,w), (M,d)
    model_args = {"variant": profile.model.variant, "latent_channels": mean[1],
                  "latent_size": mean[-1], "condition_dim": cond[-1],
                  "condition_tokens": cond[0], "gradient_checkpointing": ft.gradient_checkpointing,
                  **backbone_args(profile.model), "max_frames": mean[0]}
    parent = prior_checkpoint(ft.prior, prior_roots, profile.model.pixart_alpha)
    task = I2VTask(data, model_args, parent, profile.model.condition_dropout,
                   GaussianDiffusion(profile.diffusion.train_steps, profile.model.vlb_weight))
    config = fine_tune_config(
        "i2v", "video", model_args, ft, profile, {"clips": len(data), "frames": mean[0]},
        lineage(ft.prior, parent, {"i2v_features": str(features), "clips": clips_location(profile)},
                {"clips": "datasets/clips/webvid/index.parquet WHERE status = 'ok'"}))
    return run_fine_tune(task, ft, profile, out, config, stop_after)


def run_sample(profile: Profile, models: Path = MODELS, features: Path | str | None = None,
               out: Path = SAMPLES) -> dict:
    """The first frames of the first ``i2v.sample_clips`` prepared clips -> generated clips."""
    ckpt = latest_checkpoint(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished I2V checkpoint in {models}: run train-i2v first")
    model, _ = load_model(ckpt)
    vae = build_vae(profile.vae)
    data = FeatureShards(features or features_location(profile), first=profile.i2v.sample_clips)  # only the clips drawn
    n = len(data)
    first = data.tensors["latent_mean"][:n, 0]
    z = image_to_video_latents(model, first, data.tensors["condition"][:n], profile.i2v.frames,
                               profile.diffusion, profile.sample.seed)
    written = []
    for key, clip in zip(data.keys[:n], z):
        frames = ((vae.decode(clip).clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(0, 2, 3, 1).numpy()
        write_clip(frames, out / f"{key}.mp4", out / f"{key}.gif")
        buf = io.BytesIO()
        np.save(buf, frames)
        atomic_write_bytes(out / f"{key}.npy", buf.getvalue())
        written.append({"key": key, "mp4": str(out / f"{key}.mp4"), "gif": str(out / f"{key}.gif"),
                        "frames": int(frames.shape[0])})
    manifest = {"checkpoint": str(ckpt), "clips": written}
    write_summary(out / "manifest.json", manifest)
    return manifest
