"""Lumos-NVS's stages (supplement G.3, H.3): view features -> fine-tuning -> novel views.

    datasets/features/nvs/{objaverse,gso}/   per object: view latents, tokens, cameras
    models/nvs/                              checkpoints, dvclive, summary.json
    samples/nvs/                             strip-<uid>.png (input, predicted, true views) and
                                             <uid>/<view>.png for every GSO-protocol camera
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from lumos.config import Profile
from lumos.data.nvs import NVSObjects, NVSStream, extract_nvs_features, load_views
from lumos.diffusion import GaussianDiffusion
from lumos.encoders import build_vae
from lumos.models import backbone_args
from lumos.render.stages import renders_location
from lumos.runtime import storage
from lumos.sample.i2i import load_model, save_grid, save_png
from lumos.sample.nvs import novel_views
from lumos.tasks.i2i_stages import build_encoders
from lumos.tasks.nvs import NVSTask
from lumos.tasks.priors import prior_checkpoint
from lumos.tasks.runs import fine_tune_config, run_fine_tune, write_summary
from lumos.train.lineage import lineage
from lumos.train.loop import latest_checkpoint

FEATURES = Path("datasets/features/nvs")
MODELS = Path("models/nvs")
SAMPLES = Path("samples/nvs")
SPLITS = ("objaverse", "gso")


def features_location(profile: Profile) -> str:
    """``storage.features``/nvs: the local default or a bucket URL."""
    return f"{profile.storage.features.rstrip('/')}/nvs"


def run_features(profile: Profile, renders: Path | str | None = None, out: Path | str | None = None,
                 on_shard=None) -> dict:
    """features-nvs on Ray (params ``ray``), per object, on the params' device and features.precision.
    ``renders``/``out``: default params ``storage.renders`` and ``storage.features``/nvs."""
    renders, out = renders or renders_location(profile), out or features_location(profile)
    fingerprint = {"vae": profile.vae.model_dump(), "vision_encoder": profile.vision_encoder.model_dump()}
    build = partial(build_encoders, profile.vae, profile.vision_encoder)
    return {split: extract_nvs_features(storage.join(renders, split), storage.join(out, split), build, profile.features.batch_size,
                                        fingerprint, device=profile.device, precision=profile.features.precision,
                                        ray=profile.ray, on_shard=on_shard) for split in SPLITS}


def run_train(profile: Profile, features: Path | str | None = None, out: Path = MODELS,
              prior_roots: dict | None = None, stop_after: int | None = None) -> dict:
    ft = profile.nvs.train
    features = features or features_location(profile)
    data = NVSStream(storage.join(features, "objaverse"))
    mean, cond = data.shapes["latent_mean"], data.shapes["condition"]  # (C,h,w), (M,d)
    model_args = {"variant": profile.model.variant, "latent_channels": mean[0],
                  "latent_size": mean[-1], "condition_dim": cond[-1],
                  "condition_tokens": cond[0], "gradient_checkpointing": ft.gradient_checkpointing,
                  **backbone_args(profile.model)}
    parent = prior_checkpoint(ft.prior, prior_roots, profile.model.pixart_alpha)
    task = NVSTask(data, model_args, parent, profile.model.condition_dropout,
                   GaussianDiffusion(profile.diffusion.train_steps, profile.model.vlb_weight))
    config = fine_tune_config(
        "nvs", "nvs", model_args, ft, profile, {"objects": len(data.uids), "views": data.views, "pairs": len(data)},
        lineage(ft.prior, parent, {"nvs_features": storage.join(features, "objaverse"), "renders": storage.join(renders_location(profile), "objaverse")},
                {"objects": "datasets/renders/views.parquet WHERE split = 'objaverse'"}))
    return run_fine_tune(task, ft, profile, out, config, stop_after)


def run_sample(profile: Profile, models: Path = MODELS, features: Path | str | None = None,
               renders: Path | str | None = None, out: Path = SAMPLES) -> dict:
    """The GSO protocol: condition on view 0 (azimuth 0, first elevation) of each object, render
    every protocol camera; strips show input | predicted | true views at the first elevation."""
    ckpt = latest_checkpoint(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished NVS checkpoint in {models}: run train-nvs first")
    model, _ = load_model(ckpt)
    vae = build_vae(profile.vae)
    gso = NVSObjects(storage.join(features or features_location(profile), "gso"), first=profile.nvs.sample_objects)  # only the objects drawn
    n_az = profile.nvs.eval_azimuths
    written = []
    for o, uid in enumerate(gso.uids):
        t = gso.tensors
        pred = novel_views(model, vae, t["latent_mean"][o, 0], t["condition"][o, 0], t["w2c"][o, 0],
                           t["w2c"][o], profile.diffusion, profile.sample.seed)
        truth, _ = load_views(storage.join(renders or renders_location(profile), "gso", uid))
        for i, img in enumerate(pred):
            save_png(img, out / uid / f"{i:03d}.png")
        strip = torch.cat([truth[:1], pred[:n_az], truth[:1], truth[:n_az]])
        save_grid(strip, out / f"strip-{uid}.png", per_row=n_az + 1)
        written.append({"uid": uid, "strip": str(out / f"strip-{uid}.png"), "views": len(pred)})
    manifest = {"checkpoint": str(ckpt), "input_view": 0, "objects": written,
                "cameras": gso.meta[0]["cameras"]["views"] if gso.meta else []}
    write_summary(out / "manifest.json", manifest)
    return manifest
