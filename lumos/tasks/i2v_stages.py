"""Lumos-I2V's stages (supplement G.4, H.4): clip features -> fine-tuning -> clips.

    datasets/features/i2v/   per clip shard: every frame's VAE latent, first-frame tokens
    models/i2v/              checkpoints, dvclive, summary.json
    samples/i2v/             <key>.mp4 / <key>.gif / <key>.npy (generated frames), manifest.json
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from lumos.config import Profile
from lumos.data.features import FeatureShards
from lumos.data.stream import FeatureStream
from lumos.data.i2v import extract_i2v_features
from lumos.diffusion import GaussianDiffusion
from lumos.eval.colour import variation_distances
from lumos.models import backbone_args
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


def real_clips(profile: Profile, latents: torch.Tensor) -> torch.Tensor:
    """(N,F,C,h,w) cached clip latents -> (N,F,3,H,W) in [0, 1]: the real clips as the VAE returns them."""
    from lumos.encoders import build_vae

    vae = build_vae(profile.vae)
    with torch.no_grad():
        return torch.stack([(vae.decode(z.float()).float().clamp(-1, 1) + 1) / 2 for z in latents])


def frame_motion(clips: torch.Tensor) -> float:
    """Mean absolute pixel change between consecutive frames of (N,F,3,H,W) clips in [0, 1]."""
    return float((clips[:, 1:] - clips[:, :-1]).abs().mean())


def run_sample(profile: Profile, models: Path = MODELS, features: Path | str | None = None,
               out: Path = SAMPLES) -> dict:
    """The first frames of the first ``i2v.sample_clips`` prepared clips -> generated clips."""
    ckpt = latest_checkpoint(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished I2V checkpoint in {models}: run train-i2v first")
    from lumos.runtime.units import checkpoint_id
    from lumos.sample.workers import I2VSampleWorker, build_decoder, sample_units

    data = FeatureShards(features or features_location(profile), first=profile.i2v.sample_clips)  # only the clips drawn
    n, t = len(data), data.tensors
    settings = {"frames": profile.i2v.frames, "strength": profile.i2v.sample_strength, "checkpoint": checkpoint_id(ckpt), "vae": profile.vae.model_dump(),
                "vision_encoder": profile.vision_encoder.model_dump()}
    # one generation unit per clip (lumos/sample/workers.py): clip k draws from sample.seed + k
    units = [(key, profile.sample.seed + k, (t["latent_mean"][k, 0].clone(), t["condition"][k].clone()),
              [key, float(t["latent_mean"][k, 0].double().sum()), float(t["condition"][k].double().sum())])
             for k, key in enumerate(data.keys[:n])]
    results = sample_units(I2VSampleWorker, partial(build_decoder, settings["checkpoint"], profile.vae),
                           out, settings, units, profile, {"vae": profile.features.precision})
    written = [{"key": key, "mp4": str(out / f"{key}.mp4"), "gif": str(out / f"{key}.gif"), "frames": r["frames"]}
               for key, r in zip(data.keys[:n], results)]
    manifest = {"checkpoint": str(ckpt), "clips": written}
    decoded = [torch.from_numpy(np.load(out / f"{key}.npy")).permute(0, 3, 1, 2).float() / 255
               for key in data.keys[:n]]  # the frames the workers wrote, (T, 3, H, W) in [0, 1]
    if len(decoded) >= 2:  # does a clip keep its first frame's scene? (issue 15): ratio << 1 if so
        clips, real = torch.stack(decoded), real_clips(profile, t["latent_mean"][:n])
        manifest["first_frame_colour"] = variation_distances(clips[:, 0], clips[:, 1:].flatten(0, 1))
        manifest["first_frame_colour_real"] = variation_distances(real[:, 0], real[:, 1:].flatten(0, 1))
        # a still clip keeps its scene too: how much the frames move, against the real clips
        manifest["motion"] = {"generated": frame_motion(clips), "real": frame_motion(real)}
    write_summary(out / "manifest.json", manifest)
    return manifest
