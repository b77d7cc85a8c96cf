"""Stage `features`: run the frozen encoders once over the catalog's kept images, per shard.

For every shard of the catalog's `images` view it writes one feature shard (see
:mod:`lumos.data.features`); a shard whose samples and encoder settings are unchanged is
skipped, so a killed run resumes where it stopped and new shards cost only themselves.
"""

from __future__ import annotations

import tarfile
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2
from tqdm import tqdm

from lumos.curation.catalog import query
from lumos.curation.decode import open_upright
from lumos.data.features import read_feature_meta, write_feature_shard


def square_crop(resolution: int) -> v2.Compose:
    """Resize the short side, centre-crop a square, to float [0,1] (the paper trains on squares)."""
    return v2.Compose([v2.PILToTensor(), v2.Resize(resolution, antialias=True),
                       v2.CenterCrop(resolution), v2.ToDtype(torch.float32, scale=True)])


def catalog_shards(catalog: Path | str, where: str = "true") -> dict[str, list[tuple[str, str]]]:
    """shard path -> [(key, member)] of the kept images, in a stable order."""
    rows = query(f"SELECT shard, key, member FROM images WHERE {where} ORDER BY shard, key",
                 catalog).fetchall()
    shards: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for shard, key, member in rows:
        shards[shard].append((key, member))
    return dict(shards)


def load_images(shard: str, items: list[tuple[str, str]]) -> list[Image.Image]:
    with tarfile.open(shard) as tar:
        return [open_upright(tar.extractfile(member).read()) for _, member in items]


@torch.no_grad()
def encode_images(images: list[Image.Image], resolution: int, vae, encoder, batch_size: int,
                  device: str) -> dict[str, torch.Tensor]:
    prep = square_crop(resolution)
    out: dict[str, list[torch.Tensor]] = {"latent_mean": [], "latent_std": [], "condition": []}
    for i in range(0, len(images), batch_size):
        x = torch.stack([prep(im) for im in images[i: i + batch_size]]).to(device)
        mean, std = vae.encode(x * 2 - 1)  # the VAE wants [-1, 1]
        out["latent_mean"].append(mean.float().cpu())
        out["latent_std"].append(std.float().cpu())
        out["condition"].append(encoder(x).float().cpu())  # tau_img(x), eq. (1)
    return {k: torch.cat(v) for k, v in out.items()}


def extract_features(catalog: Path | str, out_dir: Path | str, vae, encoder, resolution: int,
                     batch_size: int, fingerprint: dict, device: str = "cpu") -> dict:
    """Write one feature shard per catalog shard; returns how many were computed or cached."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"computed": 0, "cached": 0, "samples": 0}
    shards = catalog_shards(catalog)
    wanted = set()
    for shard, items in tqdm(shards.items(), desc="features", dynamic_ncols=True):
        target = out / (shard.replace("/", "--").removesuffix(".tar") + ".safetensors")
        wanted.add(target.name)
        meta = {"fingerprint": fingerprint, "keys": [k for k, _ in items], "shard": shard}
        counts["samples"] += len(items)
        if target.exists() and read_feature_meta(target) == meta:
            counts["cached"] += 1
            continue
        tensors = encode_images(load_images(shard, items), resolution, vae, encoder, batch_size, device)
        write_feature_shard(target, meta["keys"], tensors, meta)
        counts["computed"] += 1
    for stale in out.glob("*.safetensors"):  # shards no longer in the catalog
        if stale.name not in wanted:
            stale.unlink()
    return counts
