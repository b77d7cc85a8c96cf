"""Where a checkpoint came from: its parent checkpoint (by path, step and weights digest) and
the versions of the datasets it was trained on (DVC's hashes from dvc.lock, plus the catalog
query or index that picked the samples). Recorded in every checkpoint's config.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml


def _dvc_outputs(lock: Path) -> dict[str, str]:
    """output path -> md5 of every stage's outputs in dvc.lock (empty when not run by DVC)."""
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {o["path"]: o.get("md5") or o.get("hash") for s in stages.values() for o in s.get("outs", [])}


def dataset_versions(datasets: dict[str, str], lock: Path | str = "dvc.lock") -> dict[str, dict]:
    """name -> {path, dvc_md5 (None if that path is not a DVC output yet)}; a dataset inside a
    DVC output gets that output's hash."""
    outs = _dvc_outputs(Path(lock))
    versions = {}
    for name, path in datasets.items():
        owner = next((o for o in sorted(outs, key=len, reverse=True)
                      if path == o or path.startswith(o.rstrip("/") + "/")), None)
        versions[name] = {"path": path, "dvc_output": owner, "dvc_md5": outs.get(owner) if owner else None}
    return versions


def weights_digest(checkpoint: Path | str) -> str:
    h = hashlib.sha256()
    with open(Path(checkpoint) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def parent_record(checkpoint: Path | str | None) -> dict | None:
    if checkpoint is None:
        return None
    ckpt = Path(checkpoint)
    config = json.loads((ckpt / "config.json").read_text())
    return {"checkpoint": str(ckpt), "task": config.get("task"), "step": config.get("step"),
            "sha256_16": weights_digest(ckpt)}


def lineage(prior: str, parent: Path | str | None, datasets: dict[str, str],
            queries: dict[str, str] | None = None, lock: Path | str = "dvc.lock") -> dict:
    return {"prior": prior, "parent": parent_record(parent),
            "datasets": dataset_versions(datasets, lock), "queries": queries or {}}
