"""The feature cache: one safetensors file per catalog shard, read by training only.

Each file holds, for the samples of one shard (in ``keys`` order, kept in the metadata):
``latent_mean``/``latent_std`` (N,C,h,w) of the VAE posterior (already scaled, so training can
sample z = mean + std * eps) and ``condition`` (N,M,d), the frozen encoder's tokens.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec
import torch
from safetensors import safe_open
from safetensors.torch import save, save_file
from torch.utils.data import Dataset

TENSORS = ("latent_mean", "latent_std", "condition")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def write_feature_shard(path: Path | str, keys: list[str], tensors: dict[str, torch.Tensor],
                        meta: dict, dtype: torch.dtype | str | None = None) -> None:
    """Write one shard's features atomically; ``meta`` (JSON) says what they were made from.

    ``dtype`` (a torch dtype or ``fp32``/``fp16``/``bf16``, the params' ``features.precision``)
    stores the floating tensors in that precision: fp16 halves the cache (section 6 of DESIGN).
    """
    if isinstance(dtype, str):
        dtype = DTYPES[dtype]
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    remote = "://" in str(path)
    path = str(path) if remote else Path(path)
    missing = set(TENSORS) - set(tensors)
    if missing:
        raise ValueError(f"feature shard {path} lacks {sorted(missing)}")
    if any(t.shape[0] != len(keys) for t in tensors.values()):
        raise ValueError(f"feature shard {path}: tensors and keys disagree on the sample count")
    tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
    metadata = {"keys": json.dumps(keys), "meta": json.dumps(meta, sort_keys=True)}
    if remote:  # an object store's put is all or nothing
        with fsspec.open(path, "wb") as f:
            f.write(save(tensors, metadata=metadata))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_feature_meta(path: Path | str) -> dict:
    if "://" in str(path):
        from lumos.data.stream import header_meta, read_header

        return header_meta(read_header(str(path)), "meta")
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["meta"])


class FeatureShards(Dataset):
    """All samples of a folder of feature shards, in memory: for sampling and evaluation on a few
    samples. Training streams them (lumos.data.stream.FeatureStream)."""

    def __init__(self, root: Path | str, first: int | None = None) -> None:
        """``first``: read only the first that many samples (in shard, then key order), slice by
        slice from as few shards as hold them (sampling draws a few; the cache may be huge)."""
        from lumos.data.stream import list_shards, load_shard

        files = list_shards(str(root))  # a local folder or an fsspec URL (params storage.features)
        if not files:
            raise FileNotFoundError(f"no feature shards in {root}: run the features stage first")
        self.keys: list[str] = []
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in TENSORS}
        for file in files:
            if first is not None and len(self.keys) >= first:
                break
            if "://" in file:  # remote: one whole-file read
                tensors, meta = load_shard(file)
                keys = json.loads(meta["keys"])
                n = len(keys) if first is None else min(len(keys), first - len(self.keys))
                self.keys += keys[:n]
                for k in TENSORS:
                    parts[k].append(tensors[k][:n])
                continue
            with safe_open(file, framework="pt") as f:
                keys = json.loads(f.metadata()["keys"])
                n = len(keys) if first is None else min(len(keys), first - len(self.keys))
                self.keys += keys[:n]
                for k in TENSORS:
                    parts[k].append(f.get_slice(k)[:n])
        self.tensors = {k: torch.cat(v) for k, v in parts.items()}

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each tensor's per-sample shape."""
        return {k: tuple(v.shape[1:]) for k, v in self.tensors.items()}

    def keys_head(self, n: int = 3) -> list[str]:
        return self.keys[:n]

    def limit(self, n: int | None) -> FeatureShards:
        """Keep the first ``n`` samples (in shard, then key order): the data-scale ablation."""
        if n is not None and n < len(self.keys):
            self.keys = self.keys[:n]
            self.tensors = {k: v[:n] for k, v in self.tensors.items()}
        return self

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[indices] for k, v in self.tensors.items()}
