"""The I2V training set (supplement G.4, H.4): per prepared clip, every frame's VAE latent and
the first frame's encoder tokens, one feature shard per clip shard (the same layout as the I2I
cache, with a frame axis: latent_mean/std (N,F,C,h,w), condition (N,M,d)).

Clip shards fan out to Ray actors (lumos/runtime/ray.py) that hold the encoders on the params'
device in ``features.precision``; each streams its tar one clip at a time, so a worker holds one
clip's frames (plus the shard's small latents), never a shard's or the dataset's frames.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import torch

from lumos.config import RaySettings
from lumos.data.extract import cached_meta, write_features
from lumos.runtime import storage
from lumos.runtime.device import place, resolve_device
from lumos.runtime.ray import run_shards


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(F,R,R,3) uint8 -> (F,3,R,R) float [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


@dataclass(frozen=True)
class ClipJob:
    tar: str  # the clip shard (local path or URL)
    target: str  # the feature shard to write
    meta: dict  # fingerprint and the shard's clip keys (from the clips' index), in key order


class ClipFeatureWorker:
    """Encodes clip shards one at a time (a Ray actor or in-process); ``build()`` returns
    (vae, encoder), placed once on ``device`` in ``precision``."""

    def __init__(self, build: Callable[[], tuple], device: str = "cpu", precision: str = "fp32") -> None:
        self.build, self.device, self.precision = build, resolve_device(device), precision
        self.models: tuple | None = None

    @torch.no_grad()
    def run(self, job: ClipJob) -> str:
        if cached_meta(job.target) == job.meta:
            return "cached"
        if self.models is None:
            self.models = tuple(place(m, self.device, self.precision) for m in self.build())
        vae, encoder = self.models
        encoded: dict[str, tuple[torch.Tensor, ...]] = {}
        for sample in storage.iter_tar_samples(job.tar):  # one clip's frames at a time
            x = frames_to_tensor(np.load(io.BytesIO(sample["npy"]), allow_pickle=False))
            x = x.to(self.device)  # the encoders cast to their own precision
            mean, std = vae.encode(x * 2 - 1)
            cond = encoder(x[:1])[0]  # the first frame conditions the clip
            encoded[sample["__key__"]] = tuple(t.float().cpu() for t in (mean, std, cond))
        keys = job.meta["keys"]
        if sorted(encoded) != keys:
            raise FileNotFoundError(f"{job.tar} holds clips {sorted(encoded)[:3]}... but the index lists "
                                    f"{keys[:3]}... ({len(encoded)} vs {len(keys)})")
        tensors = {name: torch.stack([encoded[k][i] for k in keys])
                   for i, name in enumerate(("latent_mean", "latent_std", "condition"))}
        write_features(job.target, keys, tensors, job.meta)
        return "computed"


def clip_shards(clips_dir: Path | str) -> dict[str, list[str]]:
    """clip shard (relative to ``clips_dir``) -> its clips' keys in key order, from index.parquet."""
    index = storage.join(storage.normalize(clips_dir), "index.parquet")
    if not storage.exists(index):
        raise FileNotFoundError(f"no {index}: run prepare-webvid first")
    con = duckdb.connect()
    storage.register_duckdb(con, index)
    rows = con.execute(f"SELECT shard, list(key ORDER BY key) FROM read_parquet('{index}') "
                       "WHERE status = 'ok' GROUP BY shard ORDER BY shard").fetchall()
    return dict(rows)


def extract_i2v_features(clips_dir: Path | str, out_dir: Path | str, build: Callable[[], tuple],
                         fingerprint: dict, *, device: str = "cpu", precision: str = "fp32",
                         ray: RaySettings | None = None,
                         on_shard: Callable[[int, int, str], None] | None = None) -> dict:
    clips, out = storage.normalize(clips_dir), storage.normalize(out_dir)
    storage.makedirs(out)
    jobs = [ClipJob(storage.join(clips, shard), storage.join(out, f"{Path(shard).stem}.safetensors"),
                    {"fingerprint": fingerprint, "keys": keys})
            for shard, keys in clip_shards(clips).items()]
    outcomes = run_shards(ClipFeatureWorker, (build, device, precision), jobs, ray, device=device,
                          on_done=on_shard)
    wanted = {j.target for j in jobs}
    for stale in storage.glob(out, "*.safetensors"):
        if stale not in wanted:
            storage.remove(stale)
    return {"computed": outcomes.count("computed"), "cached": outcomes.count("cached"),
            "clips": sum(len(j.meta["keys"]) for j in jobs)}
