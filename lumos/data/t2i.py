"""The T2I training set: VAE latents of the T2I subset at each progressive stage's resolution
(square, or in aspect-ratio buckets for the multi-scale stage), joined by uid with the T5 cache.

    datasets/features/t2i/<stage key>/<shard>--<h>x<w>.safetensors   uid keys, latent mean/std

A stage key is ``r<resolution>`` or ``r<resolution>-buckets``; stages sharing a key share latents.
Shards whose images and settings are unchanged are skipped (resumable, like every feature cache).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import torch
from safetensors import safe_open
from torchvision.transforms import v2

from lumos.data.buckets import bucket_table, nearest_bucket
from lumos.config import RaySettings
from lumos.data.extract import iter_image_batches
from lumos.data.features import read_feature_meta
from lumos.data.stream import Shard, ShardCache, StreamedShards, header_meta, header_shape, list_shards, load_shard, read_header
from lumos.runtime import storage
from lumos.runtime.device import place, resolve_device
from lumos.runtime.ray import run_shards


def stage_key(resolution: int, multi_aspect: bool) -> str:
    return f"r{resolution}" + ("-buckets" if multi_aspect else "")


def resize_crop(height: int, width: int) -> v2.Compose:
    """Cover (height, width) keeping the aspect ratio, then centre-crop it; float [0, 1]."""
    return v2.Compose([v2.PILToTensor(), _Cover(height, width), v2.CenterCrop((height, width)),
                       v2.ToDtype(torch.float32, scale=True)])


class _Cover(torch.nn.Module):
    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = max(self.height / h, self.width / w)
        return v2.functional.resize(x, [max(self.height, round(h * s)), max(self.width, round(w * s))],
                                    antialias=True)


def _save(path: str, tensors: dict[str, torch.Tensor], keys: list[str], meta: dict) -> None:
    from safetensors.torch import save

    storage.write_bytes_atomic(path, save({k: v.contiguous() for k, v in tensors.items()},
                                          metadata={"keys": json.dumps(keys), "meta": json.dumps(meta, sort_keys=True)}))


@dataclass(frozen=True)
class LatentJob:
    shard: str  # the tar (local path or URL)
    items: list[tuple[str, str]]  # (uid, member) in subset order
    base: str  # out/<shard name>: files are <base>--<h>x<w>.safetensors and <base>.done.json
    meta: dict


class LatentWorker:
    """Encodes subset shards one at a time (a Ray actor or in-process): decodes ``decode_batch``
    images at a time, sorts them into buckets and keeps only their latents; the VAE is built
    once by ``build()``, on ``device`` in ``precision``."""

    def __init__(self, build: Callable, table: list, batch_size: int, decode_batch: int,
                 device: str = "cpu", precision: str = "fp32") -> None:
        self.build, self.table, self.batch_size, self.decode_batch = build, table, batch_size, decode_batch
        self.device, self.precision = resolve_device(device), precision
        self.vae = None

    @torch.no_grad()
    def run(self, job: LatentJob) -> str:
        done = f"{job.base}.done.json"
        if storage.exists(done) and json.loads(storage.read_bytes(done)) == job.meta:
            return "cached"
        if self.vae is None:
            self.vae = place(self.build(), self.device, self.precision)
        buckets: dict[tuple[int, int], list[tuple[int, torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for positions, images in iter_image_batches(job.shard, job.items, self.decode_batch):
            groups: dict[tuple[int, int], list[int]] = defaultdict(list)
            for j, im in enumerate(images):
                groups[nearest_bucket(im.height, im.width, self.table)].append(j)
            for (h, w), idx in sorted(groups.items()):
                prep = resize_crop(h, w)
                for k in range(0, len(idx), self.batch_size):
                    part = idx[k: k + self.batch_size]
                    x = torch.stack([prep(images[j]) for j in part]).to(self.device)
                    mean, std = self.vae.encode(x * 2 - 1)
                    buckets[(h, w)] += [(positions[j], m, s) for j, m, s in
                                        zip(part, mean.float().cpu(), std.float().cpu())]
        for old in storage.glob(job.base.rsplit("/", 1)[0], f"{job.base.rsplit('/', 1)[1]}--*.safetensors"):
            storage.remove(old)
        for (h, w), rows in sorted(buckets.items()):
            rows.sort(key=lambda r: r[0])  # subset order within a bucket
            _save(f"{job.base}--{h}x{w}.safetensors",
                  {"latent_mean": torch.stack([r[1] for r in rows]), "latent_std": torch.stack([r[2] for r in rows])},
                  [job.items[r[0]][0] for r in rows], {**job.meta, "bucket": [h, w]})
        storage.write_bytes_atomic(done, json.dumps(job.meta).encode())  # last: the shard is finished
        return "computed"


def extract_t2i_latents(subset: Path | str, out_dir: Path | str, build: Callable, resolution: int,
                        multi_aspect: bool, batch_size: int, fingerprint: dict, multiple: int = 16, *,
                        decode_batch: int = 64, device: str = "cpu", precision: str = "fp32",
                        ray: RaySettings | None = None,
                        on_shard: Callable[[int, int, str], None] | None = None) -> dict:
    """Latents of every subset image at ``resolution`` (square) or in its nearest bucket, per
    subset shard on Ray when ``ray`` is given; ``build()`` returns the VAE (once per worker)."""
    out = storage.normalize(out_dir)
    storage.makedirs(out)
    rows = duckdb.sql(f"SELECT shard, uid, member FROM '{subset}' ORDER BY shard, key").fetchall()
    shards: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for shard, uid, member in rows:
        shards[shard].append((uid, member))
    table = bucket_table(resolution, multiple) if multi_aspect else [(resolution, resolution)]
    jobs = [LatentJob(storage.normalize(shard), items, storage.join(out, shard.replace("/", "--").removesuffix(".tar")),
                      json.loads(json.dumps({"fingerprint": fingerprint, "shard": shard,  # as the done file reads
                                             "keys": [u for u, _ in items], "table": table})))
            for shard, items in shards.items()]
    outcomes = run_shards(LatentWorker, (build, table, batch_size, decode_batch, device, precision), jobs, ray,
                          device=device, on_done=on_shard)
    bases = {j.base.rsplit("/", 1)[1] for j in jobs}
    for stale in storage.glob(out, "*"):  # shards no longer in the subset
        name = stale.rsplit("/", 1)[1]
        bucket_file = re.fullmatch(r"(.*)--\d+x\d+\.safetensors", name)
        if (bucket_file.group(1) if bucket_file else name.removesuffix(".done.json")) not in bases:
            storage.remove(stale)
    return {"computed": outcomes.count("computed"), "cached": outcomes.count("cached"), "samples": len(rows)}


def _read(path: Path, names: tuple[str, ...]) -> tuple[list[str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["keys"]), {k: f.get_tensor(k) for k in names}


class T2IDataset:
    """(latent mean, latent std) joined with both T5 caption embeddings by uid, per bucket.

    Indices are global; ``sample_indices`` draws a micro-batch inside one bucket, the bucket
    chosen with probability proportional to its size (a bucketed batch sampler).
    """

    TEXT = ("raw_emb", "raw_mask", "long_emb", "long_mask", "has_long")

    def __init__(self, latents: Path | str, t5: Path | str) -> None:
        text_keys, text = [], defaultdict(list)
        t5_files = sorted(Path(t5).glob("*.safetensors"))
        if not t5_files:
            raise FileNotFoundError(f"no T5 cache in {t5}: run features-t5 first")
        for file in t5_files:
            keys, tensors = _read(file, self.TEXT)
            text_keys += keys
            for k, v in tensors.items():
                text[k].append(v)
        row = {u: i for i, u in enumerate(text_keys)}
        text_all = {k: torch.cat(v) for k, v in text.items()}
        buckets: dict[tuple[int, int], dict[str, list]] = defaultdict(lambda: defaultdict(list))
        files = sorted(Path(latents).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no T2I latents in {latents}: run features-t2i first")
        for file in files:
            keys, tensors = _read(file, ("latent_mean", "latent_std"))
            missing = [k for k in keys if k not in row]
            if missing:
                raise KeyError(f"{file}: {len(missing)} samples have no T5 embedding (e.g. {missing[0]})")
            b = buckets[tuple(read_feature_meta(file)["bucket"])]
            b["keys"] += keys
            for k, v in tensors.items():
                b[k].append(v)
        self.buckets: list[tuple[int, int]] = sorted(buckets)
        self.keys: list[str] = []
        self.tensors: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.offsets = [0]
        for hw in self.buckets:
            b = buckets[hw]
            idx = torch.tensor([row[k] for k in b["keys"]])
            self.keys += b["keys"]
            self.tensors["latent_mean"].append(torch.cat(b["latent_mean"]))
            self.tensors["latent_std"].append(torch.cat(b["latent_std"]))
            for k in self.TEXT:
                self.tensors[k].append(text_all[k][idx])
            self.offsets.append(len(self.keys))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def text_width(self) -> tuple[int, int]:
        """(tokens, width) of the T5 embeddings."""
        return tuple(self.tensors["raw_emb"][0].shape[1:])

    def bucket_of(self, index: int) -> int:
        return next(b for b in range(len(self.buckets)) if index < self.offsets[b + 1])

    def sample_indices(self, size: int, generator: torch.Generator) -> torch.Tensor:
        sizes = torch.tensor([self.offsets[b + 1] - self.offsets[b] for b in range(len(self.buckets))],
                             dtype=torch.float)
        b = int(torch.multinomial(sizes, 1, generator=generator))
        return self.offsets[b] + torch.randint(0, int(sizes[b]), (size,), generator=generator)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        b = self.bucket_of(int(indices[0]))
        local = indices - self.offsets[b]
        if bool((local < 0).any() or (local >= self.offsets[b + 1] - self.offsets[b]).any()):
            raise ValueError("a T2I micro-batch must stay inside one aspect-ratio bucket")
        return {k: v[b][local] for k, v in self.tensors.items()}


def first_share(shards: list[Shard], fraction: float) -> list[Shard]:
    """Only the first ``fraction`` of each bucket's pairs (shards in URL order, rows in file
    order; at least one per bucket): Fig. 5's "I2I prior on 10 % of the pairs". A shard keeps its
    first ``rows`` rows, so the stream reads a fixed subset whatever the epoch or seed."""
    if fraction >= 1.0:
        return list(shards)
    totals: dict[tuple, int] = defaultdict(int)
    for s in shards:
        totals[s.group] += s.rows
    left = {g: max(1, math.ceil(fraction * n)) for g, n in totals.items()}
    kept = []
    for s in shards:
        rows = min(s.rows, left[s.group])
        if rows:
            kept.append(Shard(s.url, rows, s.group))
            left[s.group] -= rows
    return kept


class T2IStream(StreamedShards):
    """The T2I training set streamed (lumos.data.stream): each latent shard (one bucket of one
    subset shard) joined by uid with its subset shard's T5 file; micro-batches stay inside one
    aspect-ratio bucket (the bucketed batch sampler of ``T2IDataset``, as a stream)."""

    TEXT = T2IDataset.TEXT

    def __init__(self, latents: Path | str, t5: Path | str, pair_fraction: float = 1.0) -> None:
        if not 0.0 < pair_fraction <= 1.0:
            raise ValueError(f"pair_fraction must be in (0, 1], got {pair_fraction}")
        urls = list_shards(str(latents))
        if not urls:
            raise FileNotFoundError(f"no T2I latents in {latents}: run features-t2i first")
        self.t5_root = str(t5).rstrip("/")
        shards, latent_shapes = [], {}
        for url in urls:
            header = read_header(url)
            bucket = tuple(header_meta(header, "meta")["bucket"])
            shards.append(Shard(url, len(header_meta(header, "keys")), bucket))
            latent_shapes.setdefault(bucket, header_shape(header, "latent_mean")[1:])
        self.shards = first_share(shards, pair_fraction)
        self.buckets: list[tuple[int, int]] = sorted(latent_shapes)
        self.shapes = {"latent_mean": latent_shapes[self.buckets[0]]}  # (C, h, w) of the first bucket
        t5_file = self._t5_url(urls[0])
        try:
            header = read_header(t5_file)
        except FileNotFoundError:
            raise FileNotFoundError(f"no T5 cache {t5_file}: run features-t5 first") from None
        self.text_width = header_shape(header, "raw_emb")[1:]  # (tokens, width)

    def _t5_url(self, latent_url: str) -> str:
        base = latent_url.rsplit("/", 1)[-1].removesuffix(".safetensors").rsplit("--", 1)[0]
        return f"{self.t5_root}/{base}.safetensors"

    @staticmethod
    def _open(url: str) -> tuple[dict[str, torch.Tensor], list[str], dict[str, int]]:
        tensors, meta = load_shard(url)
        keys = json.loads(meta["keys"])
        return tensors, keys, {k: i for i, k in enumerate(keys)}

    def load_rows(self, shard: Shard, rows: list[int], cache: ShardCache) -> dict[str, torch.Tensor]:
        latents, keys, _ = cache.get(shard.url, lambda: self._open(shard.url))
        t5_url = self._t5_url(shard.url)
        text, _, row = cache.get(t5_url, lambda: self._open(t5_url))
        uids = [keys[r] for r in rows]
        missing = [u for u in uids if u not in row]
        if missing:
            raise KeyError(f"{shard.url}: {len(missing)} samples have no T5 embedding (e.g. {missing[0]})")
        idx, t5_idx = torch.tensor(rows), torch.tensor([row[u] for u in uids])
        return {"latent_mean": latents["latent_mean"][idx], "latent_std": latents["latent_std"][idx],
                **{k: text[k][t5_idx] for k in self.TEXT}}
