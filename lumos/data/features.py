"""The feature cache: one safetensors file per catalog shard, read by training only.

Each file holds, for the samples of one shard (in ``keys`` order, kept in the metadata):
``latent_mean``/``latent_std`` (N,C,h,w) of the VAE posterior (already scaled, so training can
sample z = mean + std * eps) and ``condition`` (N,M,d), the frozen encoder's tokens.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

TENSORS = ("latent_mean", "latent_std", "condition")


def write_feature_shard(path: Path | str, keys: list[str], tensors: dict[str, torch.Tensor],
                        meta: dict) -> None:
    """Write one shard's features atomically; ``meta`` (JSON) says what they were made from."""
    path = Path(path)
    missing = set(TENSORS) - set(tensors)
    if missing:
        raise ValueError(f"feature shard {path} lacks {sorted(missing)}")
    if any(t.shape[0] != len(keys) for t in tensors.values()):
        raise ValueError(f"feature shard {path}: tensors and keys disagree on the sample count")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={"keys": json.dumps(keys), "meta": json.dumps(meta, sort_keys=True)})
    os.replace(tmp, path)


def read_feature_meta(path: Path | str) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["meta"])


class FeatureShards(Dataset):
    """All samples of a folder of feature shards, as dicts of tensors (loaded once, in memory)."""

    def __init__(self, root: Path | str) -> None:
        files = sorted(Path(root).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no feature shards in {root}: run the features stage first")
        self.keys: list[str] = []
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in TENSORS}
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                self.keys += json.loads(f.metadata()["keys"])
                for k in TENSORS:
                    parts[k].append(f.get_tensor(k))
        self.tensors = {k: torch.cat(v) for k, v in parts.items()}

    def __len__(self) -> int:
        return len(self.keys)

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
