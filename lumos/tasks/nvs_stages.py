"""Lumos-NVS's stages (supplement G.3, H.3): view features -> fine-tuning -> novel views.

    datasets/features/nvs/{objaverse,gso}/   per object: view latents, tokens, cameras
    models/nvs/                              checkpoints, dvclive, summary.json
    samples/nvs/                             strip-<uid>.png (input, predicted, true views) and
                                             <uid>/<view>.png for every GSO-protocol camera
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from lumos.config import Profile
from lumos.data.nvs import NVSStream, extract_nvs_features
from lumos.diffusion import GaussianDiffusion
from lumos.models import backbone_args
from lumos.render.stages import renders_location
from lumos.runtime import storage
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
    import json

    from lumos.data.stream import list_shards, load_shard
    from lumos.runtime.units import checkpoint_id
    from lumos.sample.workers import NVSSampleWorker, build_decoder, sample_units

    gso = storage.join(features or features_location(profile), "gso")  # a local folder or a bucket URL
    renders = renders or renders_location(profile)
    files = list_shards(gso)[: profile.nvs.sample_objects]  # only the objects drawn
    if not files:
        raise FileNotFoundError(f"no NVS features in {gso}: run features-nvs first")
    uids = [f.rsplit("/", 1)[-1].removesuffix(".safetensors") for f in files]
    settings = {"azimuths": profile.nvs.eval_azimuths, "checkpoint": checkpoint_id(ckpt),
                "vae": profile.vae.model_dump(), "vision_encoder": profile.vision_encoder.model_dump()}
    # one generation unit per object (lumos/sample/workers.py), each from sample.seed as before
    units = [(uid, profile.sample.seed, (f, storage.normalize(storage.join(renders, "gso", uid))),
              [f, checkpoint_id(f)]) for uid, f in zip(uids, files)]
    results = sample_units(NVSSampleWorker, partial(build_decoder, settings["checkpoint"], profile.vae),
                           out, settings, units, profile, {"vae": profile.features.precision})
    written = [{"uid": uid, "strip": str(out / r["file"]), "views": r["views"],
                "foreground_iou": r["foreground_iou"]} for uid, r in zip(uids, results)]
    cameras = json.loads(load_shard(files[0])[1]["meta"])["cameras"]["views"]  # the protocol's, from the first object
    ious = [w["foreground_iou"] for w in written]
    manifest = {"checkpoint": str(ckpt), "input_view": 0, "objects": written,
                "foreground_iou": sum(ious) / len(ious), "cameras": cameras}
    write_summary(out / "manifest.json", manifest)
    return manifest
