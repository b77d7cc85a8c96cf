"""Stage `features`: run the frozen encoders once over the catalog's kept images, per shard.

For every shard of the catalog's `images` view it writes one feature shard (see
:mod:`lumos.data.features`); a shard whose samples and encoder settings are unchanged is
skipped, so a killed run resumes where it stopped and new shards cost only themselves.

Shards fan out to Ray actors (lumos/runtime/ray.py) that hold the encoders on the params' device
and precision; each streams its tar (local or fsspec URL) and decodes, resizes and encodes
``batch_size`` images at a time, so memory is bounded by batch x workers, never by a shard.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

from lumos.config import RaySettings
from lumos.curation.catalog import query
from lumos.curation.decode import open_upright
from lumos.data.features import read_feature_meta, write_feature_shard
from lumos.runtime import storage
from lumos.runtime.device import place, resolve_device
from lumos.runtime.ray import map_shards, model_gpus, run_local


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
    """A few images of a shard (local or fsspec URL), decoded, in ``items`` order."""
    if "://" in str(shard):
        found = dict(storage.read_members(shard, [m for _, m in items]))
        return [open_upright(found[m]) for _, m in items]
    with tarfile.open(shard) as tar:
        return [open_upright(tar.extractfile(member).read()) for _, member in items]


def iter_image_batches(shard: str, items: list[tuple[str, str]], batch_size: int
                       ) -> Iterator[tuple[list[int], list[Image.Image]]]:
    """(positions in ``items``, decoded images) batches in the tar's order, streamed: at most
    ``batch_size`` decoded images exist at a time. A member the catalog names but the tar lacks
    is an error."""
    position = {member: i for i, (_, member) in enumerate(items)}
    seen: list[int] = []
    batch: tuple[list[int], list[Image.Image]] = ([], [])
    for member, data in storage.read_members(shard, list(position)):
        batch[0].append(position[member])
        batch[1].append(open_upright(data))
        if len(batch[0]) == batch_size:
            seen += batch[0]
            yield batch
            batch = ([], [])
    if batch[0]:
        seen += batch[0]
        yield batch
    if len(seen) != len(items):
        missing = sorted(set(position) - {items[i][1] for i in seen})
        raise FileNotFoundError(f"{shard} lacks {len(missing)} catalogued member(s), e.g. {missing[:3]}")


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


# --------------------------------------------------------------------------- remote caches
def remote_feature_meta(location: str) -> dict | None:
    """``meta`` of a feature shard on object storage from its safetensors header alone (a u64
    length then the JSON header, read by range), or None when there is none."""
    fs, path = storage.fs_and_path(location)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return json.loads(header.get("__metadata__", {}).get("meta", "null"))


def cached_meta(target: str) -> dict | None:
    if "://" in target:
        return remote_feature_meta(target)
    return read_feature_meta(target) if Path(target).exists() else None


def write_features(target: str, keys: list[str], tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """The feature cache's own writer; on object storage the finished file is uploaded in one PUT."""
    if "://" not in target:
        write_feature_shard(target, keys, tensors, meta)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "shard.safetensors"
        write_feature_shard(local, keys, tensors, meta)
        fs, path = storage.fs_and_path(target)
        fs.put_file(str(local), path)


# --------------------------------------------------------------------------- the stage
@dataclass(frozen=True)
class FeatureJob:
    shard: str  # the tar (local path or URL)
    items: list[tuple[str, str]]  # (key, member) in catalog order
    target: str  # the feature shard to write
    meta: dict


class FeatureWorker:
    """Encodes shards one at a time (a Ray actor or in-process); builds the encoders once, on
    ``device`` in ``precision`` (params ``device``, ``features.precision``)."""

    def __init__(self, build: Callable[[], tuple], resolution: int, batch_size: int,
                 device: str = "auto", precision: str = "fp32") -> None:
        self.build, self.resolution, self.batch_size = build, resolution, batch_size
        self.device, self.precision = resolve_device(device), precision
        self.models: tuple | None = None

    def run(self, job: FeatureJob) -> str:
        if cached_meta(job.target) == job.meta:
            return "cached"
        if self.models is None:
            self.models = tuple(place(m, self.device, self.precision) for m in self.build())
        vae, encoder = self.models
        parts, order = defaultdict(list), []
        for positions, images in iter_image_batches(job.shard, job.items, self.batch_size):
            encoded = encode_images(images, self.resolution, vae, encoder, self.batch_size, self.device)
            for k, v in encoded.items():
                parts[k].append(v)
            order += positions
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        tensors = {k: torch.cat(v)[inverse] for k, v in parts.items()}  # back to catalog order
        write_features(job.target, [k for k, _ in job.items], tensors, job.meta)
        return "computed"


def extract_features(catalog: Path | str, out_dir: Path | str, build: Callable[[], tuple],
                     resolution: int, batch_size: int, fingerprint: dict, *, device: str = "auto",
                     precision: str = "fp32", ray: RaySettings | None = None,
                     on_shard: Callable[[int, int, str], None] | None = None) -> dict:
    """Write one feature shard per catalog shard (``out_dir`` local or fsspec URL); returns how
    many were computed or cached. ``build()`` returns (vae, encoder), called once per worker."""
    out = storage.normalize(out_dir)
    storage.makedirs(out)
    jobs = []
    for shard, items in catalog_shards(catalog).items():
        name = shard.split("://", 1)[-1].replace("/", "--").removesuffix(".tar") + ".safetensors"
        meta = {"fingerprint": fingerprint, "keys": [k for k, _ in items], "shard": shard}
        # workers may run elsewhere than this folder: absolute locations (meta keeps the catalog's)
        jobs.append(FeatureJob(storage.normalize(shard), items, storage.join(out, name), meta))
    args = (build, resolution, batch_size, device, precision)
    if ray is None:
        outcomes = run_local(FeatureWorker, args, jobs, on_shard)
    else:
        outcomes = map_shards(FeatureWorker, args, jobs, ray, gpus_per_task=model_gpus(ray, device),
                              on_done=on_shard)
    wanted = {j.target for j in jobs}
    for stale in storage.glob(out, "*.safetensors"):  # shards no longer in the catalog
        if stale not in wanted:
            storage.remove(stale)
    return {"computed": outcomes.count("computed"), "cached": outcomes.count("cached"),
            "samples": sum(len(j.items) for j in jobs)}
