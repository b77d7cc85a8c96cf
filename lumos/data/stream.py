"""Streamed training input: feature shards (local paths or any fsspec URL) read by WebDataset's
pipeline in a ``DataLoader`` with workers, so RAM holds a few shards, never the whole cache.

Order, per run seed (deterministic, so resume is exact):

    epoch e: every shard once, shuffled by (seed, e)      (an endless stream of (e, shard))
    -> wds.split_by_node   rank r takes every world-th    (ranks read disjoint shards)
    -> split by worker     role w takes every W-th        (workers read disjoint shards)
    -> rows of each shard, shuffled by (seed, e, shard)   (cheap refs: shard, row, group)
    -> micro-batches inside one group                     (T2I: one aspect-ratio bucket)
    -> skip what the checkpoint says was consumed         (refs only: nothing is read)
    -> load the rows' tensors (the last two shards kept)  -> collated dict

The ``DataLoader`` takes batches from its workers round-robin, so after ``c`` micro-batches of
a rank, worker ``w`` has made ``len(range(w, c, W))`` of them: the loader position is one
number per rank (``micro_batches``) and resuming skips exactly that much. (The worker split is
wds.split_by_worker's islice, by a role rotated with the position, see ``__iter__``.)
"""

from __future__ import annotations

import json
import random
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count, islice

import fsspec
import numpy as np
import torch
import webdataset as wds
from safetensors.torch import load as load_safetensors
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


# --------------------------------------------------------------------------- shard files
def list_shards(root: str, pattern: str = "*.safetensors") -> list[str]:
    """The shard URLs under ``root`` (a local folder or an fsspec URL), sorted."""
    fs, path = fsspec.core.url_to_fs(str(root))
    found = sorted(fs.glob(f"{path.rstrip('/')}/{pattern}"))
    local = "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))
    return [p if local else fs.unstrip_protocol(p) for p in found]


def read_header(url: str) -> dict:
    """A safetensors file's header (tensor dtypes/shapes and ``__metadata__``): two small reads."""
    with fsspec.open(url, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(size))


def header_meta(header: dict, key: str, default=None):
    raw = header.get("__metadata__", {}).get(key)
    return default if raw is None else json.loads(raw)


def header_shape(header: dict, name: str) -> tuple[int, ...]:
    if name not in header:
        raise KeyError(f"shard lacks tensor {name!r}")
    return tuple(header[name]["shape"])


def load_shard(url: str) -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors of one shard and its metadata (one whole-file read: one request on S3)."""
    with fsspec.open(url, "rb") as f:
        data = f.read()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8: 8 + size])
    return load_safetensors(data), header.get("__metadata__", {})


class ShardCache:
    """The last ``size`` shards a worker opened (batches near a shard boundary span two)."""

    def __init__(self, size: int = 2) -> None:
        self.size, self.items = size, OrderedDict()

    def get(self, key, make):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = self.items[key] = make()
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


# --------------------------------------------------------------------------- the pipeline
@dataclass(frozen=True)
class Shard:
    url: str
    rows: int  # samples in this shard (pairs for NVS)
    group: tuple = ()  # batches never mix groups (T2I aspect-ratio buckets)


def _seed(*parts) -> int:
    return hash(parts) & (2**63 - 1)


def _epochs(shards: list[Shard], seed: int) -> Iterator[tuple[int, int]]:
    """(epoch, shard index), every shard once per epoch in a seeded order, for ever."""
    for epoch in count():
        order = list(range(len(shards)))
        random.Random(_seed(seed, epoch)).shuffle(order)
        yield from ((epoch, i) for i in order)


def _refs(src, shards: list[Shard], seed: int):
    for epoch, i in src:
        rows = list(range(shards[i].rows))
        random.Random(_seed(seed, epoch, i)).shuffle(rows)
        yield from ((i, r, shards[i].group) for r in rows)


def _group_batches(src, size: int):
    """Micro-batches of ``size`` refs, each inside one group (a bucketed batch sampler)."""
    open_batches: dict[tuple, list] = {}
    for ref in src:
        batch = open_batches.setdefault(ref[2], [])
        batch.append(ref[:2])
        if len(batch) == size:
            yield open_batches.pop(ref[2])


def _skip(src, n: int):
    for i, item in enumerate(src):
        if i >= n:
            yield item


def worker_skip(consumed: int, worker: int, workers: int) -> int:
    """Batches worker ``worker`` of ``workers`` made among a rank's first ``consumed`` (round-robin)."""
    return len(range(worker, consumed, max(workers, 1)))


class StreamedShards(IterableDataset):
    """A task's feature shards as an endless, per-rank, per-worker stream of micro-batches.

    Subclasses say how many samples a shard holds (``shards``) and how rows become tensors
    (``load_rows``); everything else (order, split, batching, resume) is here.
    """

    shards: list[Shard]
    micro_batch: int = 1
    seed: int = 0
    consumed: int = 0  # this rank's micro-batches already trained on
    workers: int = 0

    def load_rows(self, shard: Shard, rows: list[int], cache: ShardCache) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __len__(self) -> int:
        return sum(s.rows for s in self.shards)

    def __iter__(self):
        info = get_worker_info()
        workers = info.num_workers if info else 1
        # A fresh DataLoader asks worker 0 first; after ``consumed`` batches the next one is the
        # turn of role ``consumed % W``, so worker ``id`` plays role ``(id + consumed) % W``.
        role = ((info.id if info else 0) + self.consumed) % workers
        cache = ShardCache()
        pipeline = wds.DataPipeline(
            lambda: _epochs(self.shards, self.seed),
            wds.split_by_node,  # RANK / WORLD_SIZE (the launcher's) or the process group
            lambda src: islice(src, role, None, workers),  # wds.split_by_worker, by role
            lambda src: _refs(src, self.shards, self.seed),
            lambda src: _group_batches(src, self.micro_batch),
            lambda src: _skip(src, worker_skip(self.consumed, role, workers)),
            wds.map(lambda refs: self._collate(refs, cache)),
        )
        return iter(pipeline)

    def _collate(self, refs: list[tuple[int, int]], cache: ShardCache) -> dict[str, torch.Tensor]:
        parts: list[dict[str, torch.Tensor]] = []
        i = 0
        while i < len(refs):  # consecutive runs of one shard
            j = i
            while j < len(refs) and refs[j][0] == refs[i][0]:
                j += 1
            parts.append(self.load_rows(self.shards[refs[i][0]], [r for _, r in refs[i:j]], cache))
            i = j
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        out["_sample"] = torch.tensor([s * 2**32 + r for s, r in refs], dtype=torch.int64)  # provenance
        return out

    def loader(self, micro_batch: int, seed: int, consumed: int = 0, workers: int = 2) -> DataLoader:
        """The ``DataLoader`` of this rank from position ``consumed`` (micro-batches)."""
        if len(self.shards) == 0:
            raise ValueError("no shards to stream")
        self.micro_batch, self.seed, self.consumed, self.workers = micro_batch, seed, consumed, workers
        return DataLoader(self, batch_size=None, num_workers=workers,
                          persistent_workers=False, prefetch_factor=4 if workers else None)


def subset_counts(available: list[int], n: int | None, seed: int) -> list[int]:
    """How many of each shard's ``available`` rows a seeded random subset of ``n`` takes (all
    when ``n`` is None or not smaller): a multivariate hypergeometric draw, so every n-subset of
    the rows is equally likely without listing them (memory ~ shards, not samples)."""
    total = sum(available)
    if n is None or n >= total:
        return list(available)
    return [int(c) for c in np.random.default_rng(seed).multivariate_hypergeometric(available, n)]


def shard_picks(eligible: list[int], count: int, seed: int, shard: int) -> list[int]:
    """``count`` of a shard's ``eligible`` row numbers, seeded by (seed, shard), in file order."""
    if count >= len(eligible):
        return list(eligible)
    chosen = np.random.default_rng([seed, shard]).choice(len(eligible), size=count, replace=False)
    return [eligible[i] for i in sorted(chosen.tolist())]


class FeatureStream(StreamedShards):
    """I2I / I2V feature shards (``latent_mean``, ``latent_std``, ``condition``), streamed.

    ``max_samples``: a seeded random subset (``subset_seed``) of that size (Fig. 2b's data scale);
    ``labels``: key -> class index; when given, only those keys are read and batches carry
    ``label`` (Fig. 8's class-conditional prior, or a restriction to some sources)."""

    TENSORS = ("latent_mean", "latent_std", "condition")

    def __init__(self, root: str, max_samples: int | None = None, subset_seed: int = 0,
                 labels: dict[str, int] | None = None) -> None:
        urls = list_shards(root)
        if not urls:
            raise FileNotFoundError(f"no feature shards in {root}: run the features stage first")
        self.labels, self.subset_seed = labels, subset_seed
        available = []
        for url in urls:  # one header at a time: memory ~ one shard's keys
            header = read_header(url)
            keys = header_meta(header, "keys", [])
            available.append(len(keys) if labels is None else sum(k in labels for k in keys))
            if len(available) == 1:
                self.shapes = {k: header_shape(header, k)[1:] for k in self.TENSORS}
        if sum(available) == 0:
            raise ValueError(f"no feature shard in {root} holds any of the {len(labels or {})} wanted keys")
        counts = subset_counts(available, max_samples, subset_seed)
        self.shards = [Shard(url, c) for url, c in zip(urls, counts) if c]
        self._index = {url: i for i, url in enumerate(urls)}
        self._count = dict(zip(urls, counts))
        self._full = {url: c == a and labels is None for url, c, a in zip(urls, counts, available)}
        first = self.shards[0].url
        self._keys_head = self._picked(first, header_meta(read_header(first), "keys", []))[1][:3]
        self.root = str(root)

    def _picked(self, url: str, keys: list[str]) -> tuple[list[int], list[str]]:
        """(row numbers, keys) this stream reads of shard ``url`` (file order)."""
        if self._full[url]:
            return list(range(len(keys))), keys
        eligible = [i for i, k in enumerate(keys) if self.labels is None or k in self.labels]
        rows = shard_picks(eligible, self._count[url], self.subset_seed, self._index[url])
        return rows, [keys[i] for i in rows]

    def keys_head(self, n: int = 3) -> list[str]:
        return self._keys_head[:n]

    def _open(self, url: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        tensors, meta = load_shard(url)
        rows, keys = self._picked(url, json.loads(meta["keys"]))
        labels = None if self.labels is None else torch.tensor([self.labels[k] for k in keys])
        return tensors, torch.tensor(rows), labels

    def load_rows(self, shard: Shard, rows: list[int], cache: ShardCache) -> dict[str, torch.Tensor]:
        tensors, picked, labels = cache.get(shard.url, lambda: self._open(shard.url))
        idx = torch.tensor(rows)
        out = {k: tensors[k][picked[idx]] for k in self.TENSORS}
        if labels is not None:
            out["label"] = labels[idx]
        return out
