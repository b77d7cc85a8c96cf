"""The I2I prior's stages with the project's layout: features -> train -> sample.

    datasets/features/i2i/   VAE latents + condition tokens per catalog shard
    models/i2i/              checkpoints (model, EMA, optimizer state) and dvclive logs
    samples/i2i/             variations.png, interpolation.png
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from lumos.config import VAE, Profile, VisionEncoder
from lumos.curation.catalog import DEFAULT_CATALOG, query
from lumos.data.extract import extract_features
from lumos.data.stream import FeatureStream
from lumos.diffusion import GaussianDiffusion
from lumos.encoders import build_vae, build_vision_encoder
from lumos.models import backbone_args
from lumos.tasks.i2i import I2ITask
from lumos.tasks.i2i_conditions import catalog_labels
from lumos.tasks.runs import fit, write_summary
from lumos.train.loop import RunSpec, latest_checkpoint

FEATURES = Path("datasets/features/i2i")  # the default of storage.features + /i2i
MODELS = Path("models/i2i")
SAMPLES = Path("samples/i2i")


def build_encoders(vae: VAE, vision_encoder: VisionEncoder) -> tuple:
    """(VAE, tau_img): what a features worker builds once (picklable through functools.partial)."""
    return build_vae(vae), build_vision_encoder(vision_encoder)


def features_location(profile: Profile) -> str:
    """``storage.features``/i2i: the local default or a bucket URL."""
    return f"{profile.storage.features.rstrip('/')}/i2i"


def run_features(profile: Profile, catalog: Path = DEFAULT_CATALOG, out: Path | str | None = None,
                 on_shard=None) -> dict:
    """features-i2i on Ray (params ``ray``), on the params' device and features.precision."""
    fingerprint = {"vae": profile.vae.model_dump(), "vision_encoder": profile.vision_encoder.model_dump(),
                   "resolution": profile.train.resolution}
    return extract_features(catalog, out or features_location(profile),
                            partial(build_encoders, profile.vae, profile.vision_encoder),
                            profile.train.resolution, profile.features.batch_size, fingerprint,
                            device=profile.device, precision=profile.features.precision,
                            ray=profile.ray, on_shard=on_shard)


def run_spec(profile: Profile) -> RunSpec:
    t = profile.train
    return RunSpec(steps=t.steps, global_batch=t.global_batch, micro_batch=t.micro_batch,
                   optimizer=t.optimizer, precision=t.precision, zero_stage=t.zero_stage,
                   ema_decay=t.ema_decay, seed=t.seed, checkpoint_every=t.checkpoint_every,
                   log_every=t.log_every, keep_last=t.keep_last, loader_workers=t.loader_workers)


def run_train(profile: Profile, features: Path | None = None, out: Path = MODELS,
              stop_after: int | None = None, catalog: Path = DEFAULT_CATALOG) -> dict:
    t = profile.train
    # Fig. 8: only some sources, and/or their ImageNet classes as the condition
    labels, classes = catalog_labels(catalog, t.sources, t.condition == "class")
    # storage.features/i2i: a local folder or any fsspec URL, streamed per rank
    data = FeatureStream(features or features_location(profile), t.max_samples, t.subset_seed, labels)
    task = I2ITask(data, profile.model.variant, profile.model.condition_dropout,
                   GaussianDiffusion(profile.diffusion.train_steps, profile.model.vlb_weight),
                   t.gradient_checkpointing, architecture=backbone_args(profile.model),
                   condition=t.condition, num_classes=len(classes))
    kind = {"image": "vision", "class": "class", "none": "none"}[t.condition]  # what transfer sees
    config = {"task": "i2i", "condition": kind, "classes": classes, "model_class": "dit", "model_args": task.model_args(),
              "encoders": {"vae": profile.vae.model_dump(), "vision_encoder": profile.vision_encoder.model_dump()},
              "train": profile.train.model_dump(exclude={"steps", "checkpoint_every", "log_every", "keep_last"}),
              "schedule": {"steps": profile.train.steps}, "diffusion": profile.diffusion.model_dump(),
              "features": {"samples": len(data), "keys_head": data.keys_head(3)}}
    from lumos.eval.probes import i2i_probe  # held-out loss at checkpoints (eval.every), on rank 0
    from lumos.tasks.runs import _rank

    probe = i2i_probe(profile) if _rank() == 0 else None
    return write_summary(out / "summary.json", fit(task, run_spec(profile), out, config, stop_after=stop_after,
                                                   probe=probe, probe_every=profile.eval.every))


def run_sample(profile: Profile, models: Path = MODELS, catalog: Path = DEFAULT_CATALOG,
               out: Path = SAMPLES) -> dict:
    ckpt = latest_checkpoint(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished checkpoint in {models}: run train-i2i first")
    config = json.loads((Path(ckpt) / "config.json").read_text())  # the model is built in the workers
    if config.get("condition", "vision") != "vision":
        raise ValueError(f"{ckpt} is a {config['condition']}-conditioned prior (Fig. 8's train.condition): "
                         "it has no image variations; its grid stops at evaluate-t2i")
    from lumos.runtime.units import checkpoint_id
    from lumos.sample.workers import I2ISampleWorker, build_image, sample_units

    s, res = profile.sample, profile.train.resolution
    rows = query(f"SELECT shard, key, member FROM images ORDER BY key LIMIT {max(s.images, 2)}",
                 catalog).fetchall()
    settings = {"images": s.images, "variations": s.variations, "interpolation_steps": s.interpolation_steps,
                "resolution": res, "checkpoint": checkpoint_id(ckpt), "vae": profile.vae.model_dump(),
                "vision_encoder": profile.vision_encoder.model_dump()}
    inputs = [tuple(r) for r in rows]  # decoded in the worker
    # two generation units (lumos/sample/workers.py), each from sample.seed as before
    sample_units(I2ISampleWorker, partial(build_image, settings["checkpoint"], profile.vae, profile.vision_encoder),
                 out, settings, [("variations", s.seed, inputs, inputs), ("interpolation", s.seed, inputs[:2], inputs[:2])],
                 profile, {"vae": profile.features.precision, "encoder": profile.features.precision})
    return {"checkpoint": str(ckpt), "variations": str(out / "variations.png"),
            "interpolation": str(out / "interpolation.png"), "inputs": [r[1] for r in rows]}
