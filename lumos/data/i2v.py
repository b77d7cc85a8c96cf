"""The I2V training set (supplement G.4, H.4): per prepared clip, every frame's VAE latent and
the first frame's encoder tokens, one feature shard per clip shard (the same layout as the I2I
cache, with a frame axis: latent_mean/std (N,F,C,h,w), condition (N,M,d))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lumos.data.features import read_feature_meta, write_feature_shard
from lumos.video.webvid import iter_samples


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(F,R,R,3) uint8 -> (F,3,R,R) float [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def extract_i2v_features(clips_dir: Path | str, out_dir: Path | str, vae, encoder, fingerprint: dict) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_shard: dict[str, list[tuple[str, np.ndarray]]] = {}
    for key, frames, meta in iter_samples(clips_dir):
        by_shard.setdefault(meta["tar"], []).append((key, frames))
    counts, wanted = {"computed": 0, "cached": 0, "clips": 0}, set()
    for shard, items in tqdm(sorted(by_shard.items()), desc="i2v features", dynamic_ncols=True):
        target = out / f"{Path(shard).stem}.safetensors"
        wanted.add(target.name)
        meta = {"fingerprint": fingerprint, "keys": [k for k, _ in items]}
        counts["clips"] += len(items)
        if target.exists() and read_feature_meta(target) == meta:
            counts["cached"] += 1
            continue
        means, stds, conds = [], [], []
        for _, frames in items:
            x = frames_to_tensor(frames)
            mean, std = vae.encode(x * 2 - 1)
            means.append(mean.float())
            stds.append(std.float())
            conds.append(encoder(x[:1]).float()[0])  # the first frame conditions the clip
        write_feature_shard(target, meta["keys"], {"latent_mean": torch.stack(means), "latent_std": torch.stack(stds),
                                                   "condition": torch.stack(conds)}, meta)
        counts["computed"] += 1
    for stale in out.glob("*.safetensors"):
        if stale.name not in wanted:
            stale.unlink()
    return counts
