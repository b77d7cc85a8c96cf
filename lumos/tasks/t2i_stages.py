"""Lumos-T2I's stages (section 3.2, supplement H.2, Table S1): latents -> progressive training
-> samples.

    datasets/features/t2i/<r...>/   VAE latents of the T2I subset per stage resolution / buckets
    models/t2i/stages/stage-<i>/    checkpoints of progressive stage i (each resumes the last)
    models/t2i/dvclive/             loss curves of all stages, one step axis; summary.json
    samples/t2i/                    one grid per aspect ratio, single images, prompts.json
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import duckdb
import torch

from lumos.caption.mixing import CaptionMixer
from lumos.caption.stages import t5_location
from lumos.config import Optimizer, Profile, T2IStage
from lumos.curation.catalog import T2I_SUBSET
from lumos.data.buckets import bucket_table, nearest_bucket
from lumos.data.t2i import T2IStream, extract_t2i_latents, stage_key
from lumos.diffusion import GaussianDiffusion
from lumos.encoders import build_vae
from lumos.models import backbone_args
from lumos.runtime import storage
from lumos.tasks.priors import prior_checkpoint, t2i_final
from lumos.tasks.runs import _rank, finished, fit, write_summary
from lumos.tasks.t2i import T2ITask
from lumos.train.lineage import lineage
from lumos.train.loop import RunSpec, latest_checkpoint

FEATURES = Path("datasets/features/t2i")
MODELS = Path("models/t2i")
SAMPLES = Path("samples/t2i")
MULTIPLE = 16  # bucket sides: VAE downsampling (8) x DiT patch (2)


def features_location(profile: Profile) -> str:
    """``storage.features``/t2i: the local default or a bucket URL."""
    return f"{profile.storage.features.rstrip('/')}/t2i"


def run_features(profile: Profile, subset: Path = T2I_SUBSET, out: Path | str | None = None,
                 on_shard=None) -> dict:
    """features-t2i on Ray (params ``ray``), per subset shard, on the params' device and features.precision."""
    out = storage.normalize(out or features_location(profile))
    keys = {(s.resolution, s.multi_aspect) for s in profile.t2i.stages}
    result = {}
    for res, multi in sorted(keys):
        fingerprint = {"vae": profile.vae.model_dump(), "resolution": res, "multi_aspect": multi}
        result[stage_key(res, multi)] = extract_t2i_latents(
            subset, storage.join(out, stage_key(res, multi)), partial(build_vae, profile.vae), res, multi,
            profile.features.batch_size, fingerprint, MULTIPLE, decode_batch=profile.ray.decode_batch,
            device=profile.device, precision=profile.features.precision, ray=profile.ray, on_shard=on_shard)
    fs, root = storage.fs_and_path(out)
    for stale in fs.ls(root, detail=False) if fs.exists(root) else []:
        if stale.rstrip("/").rsplit("/", 1)[-1] not in result:  # a stage no longer in the schedule
            fs.rm(stale, recursive=True)
    return result


def stage_spec(profile: Profile, stage: T2IStage) -> RunSpec:
    t, train = profile.t2i, profile.train
    opt = Optimizer(lr=stage.lr, weight_decay=stage.weight_decay, warmup_steps=stage.warmup_steps,
                    grad_clip=train.optimizer.grad_clip)
    return RunSpec(steps=stage.steps, global_batch=stage.global_batch,
                   micro_batch=min(t.micro_batch, stage.global_batch), optimizer=opt, precision=t.precision,
                   zero_stage=t.zero_stage, ema_decay=train.ema_decay, seed=train.seed,
                   checkpoint_every=t.checkpoint_every, log_every=train.log_every)


def run_train(profile: Profile, features: Path | str | None = None, t5: Path | str | None = None,
              out: Path = MODELS, prior_roots: dict | None = None, stop_after: int | None = None) -> dict:
    """Every stage of Table S1 in order; stage 0 starts from the prior, stage i from stage i-1.
    ``features``/``t5``: the caches (default: params ``storage.features``/t2i and /t5)."""
    t = profile.t2i
    features, t5 = features or features_location(profile), t5 or t5_location(profile)
    parent = prior_checkpoint(t.prior, prior_roots)
    summaries = []
    probes = None  # held-out loss at checkpoints (eval.every), built when a stage trains
    for i, stage in enumerate(t.stages):
        data = T2IStream(storage.join(features, stage_key(stage.resolution, stage.multi_aspect)), t5, t.pair_fraction)
        tokens, width = data.text_width
        latent = data.shapes["latent_mean"]  # (C, h, w) of the first bucket
        vae_f = data.buckets[0][0] // latent[-2]  # image side / latent side
        model_args = {"variant": profile.model.variant, "latent_channels": latent[0],
                      "latent_size": stage.resolution // vae_f, "condition_dim": width,
                      "condition_tokens": tokens, "gradient_checkpointing": profile.train.gradient_checkpointing,
                      **backbone_args(profile.model)}
        if stage.multi_aspect and profile.model.backbone == "lumos":
            model_args["size_conditioning"] = True  # the release's size + aspect-ratio embedding
        task = T2ITask(data, model_args, parent, profile.model.condition_dropout,
                       GaussianDiffusion(profile.diffusion.train_steps, profile.model.vlb_weight),
                       mixer=CaptionMixer(profile.t2i_data.long_caption_ratio))
        config = {"task": "t2i", "condition": "text", "model_class": "dit", "model_args": model_args,
                  "stage": i, "stage_settings": stage.model_dump(), "pair_fraction": t.pair_fraction, "buckets": [list(b) for b in data.buckets],
                  "encoders": {"vae": profile.vae.model_dump(), "text_encoder": profile.text_encoder.model_dump()},
                  "diffusion": profile.diffusion.model_dump(), "long_caption_ratio": profile.t2i_data.long_caption_ratio,
                  "schedule": {"steps": stage.steps},
                  "lineage": lineage(t.prior if i == 0 else f"t2i-stage-{i - 1}", parent,
                                     {"t2i_latents": str(storage.join(features, stage_key(stage.resolution, stage.multi_aspect))),
                                      "t5_cache": str(t5), "t2i_subset": str(T2I_SUBSET)},
                                     {"t2i_subset": "datasets/t2i/subset/subset.parquet (t2i-subset stage)"})}
        stage_out = out / "stages" / f"stage-{i}"
        if finished(stage_out, config, stage.steps):
            ckpt = latest_checkpoint(stage_out)
            summaries.append(json.loads((stage_out / "summary.json").read_text()))
        else:
            if probes is None and profile.eval.every is not None and _rank() == 0:  # rank 0 probes
                from lumos.eval.probes import T2IProbes

                probes = T2IProbes(profile)
            summary = fit(task, stage_spec(profile, stage), stage_out, config, stop_after=stop_after,
                          log_dir=out / "dvclive", log_step_offset=sum(s.steps for s in t.stages[:i]),
                          probe=probes and probes.at(stage.resolution), probe_every=profile.eval.every)
            summary.update(stage=i, resolution=stage.resolution, multi_aspect=stage.multi_aspect,
                           transfer={k: len(v) for k, v in task.transfer.items()})
            write_summary(stage_out / "summary.json", summary)
            summaries.append(summary)
            ckpt = latest_checkpoint(stage_out)
            if stop_after is not None:
                break
        parent = ckpt
    for extra in sorted((out / "stages").glob("stage-*")):  # stages no longer in the schedule
        if int(extra.name.split("-")[1]) >= len(t.stages):
            shutil.rmtree(extra)
    return write_summary(out / "summary.json", {"prior": t.prior, "stages": summaries,
                                                "loss_last": summaries[-1]["loss_last"],
                                                "checkpoint": summaries[-1]["checkpoint"]})


def read_prompts(subset: Path, n: int) -> list[dict]:
    rows = duckdb.sql(f"SELECT uid, key, raw_caption FROM '{subset}' ORDER BY key LIMIT {n}").fetchall()
    return [{"uid": u, "key": k, "prompt": p} for u, k, p in rows]


def run_sample(profile: Profile, models: Path = MODELS, subset: Path = T2I_SUBSET, out: Path = SAMPLES) -> dict:
    ckpt = t2i_final(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished T2I checkpoint in {models}: run train-t2i first")
    from lumos.runtime.units import checkpoint_id
    from lumos.sample.workers import T2ISampleWorker, build_t2i, sample_units

    s, last = profile.t2i.sample, profile.t2i.stages[-1]
    table = bucket_table(last.resolution, MULTIPLE) if last.multi_aspect else [(last.resolution, last.resolution)]
    prompts = read_prompts(subset, s.prompts)
    sizes = [(ratio, *nearest_bucket(round(1000 * ratio), 1000, table)) for ratio in s.aspect_ratios]
    settings = {"checkpoint": checkpoint_id(ckpt), "vae": profile.vae.model_dump(),
                "text_encoder": profile.text_encoder.model_dump()}
    # one generation unit per aspect ratio (lumos/sample/workers.py), each from t2i.sample.seed as before
    units = [(f"{h}x{w}", s.seed, (h, w, prompts), [h, w, prompts]) for _, h, w in sizes]
    sample_units(T2ISampleWorker, partial(build_t2i, settings["checkpoint"], profile.vae, profile.text_encoder,
                                          profile.device),
                 out, settings, units, profile,
                 {"vae": profile.features.precision, "text": None})  # text_encoder.precision: applied when built
    written = [{"aspect_ratio": ratio, "height": h, "width": w, "grid": str(out / f"grid-{h}x{w}.png")}
               for ratio, h, w in sizes]
    manifest = {"checkpoint": str(ckpt), "prompts": prompts, "sizes": written}
    write_summary(out / "prompts.json", manifest)
    return manifest

