"""The T5 cache (supplement H.2): embeddings of both caption kinds, per subset shard, so that
training never runs T5. Each file holds, in ``keys`` (uid) order: ``raw_emb``/``raw_mask`` and
``long_emb``/``long_mask`` (B, L, d) / (B, L), and ``has_long`` (B,) for the mixing fallback.

Shards fan out to Ray actors (lumos/runtime/ray.py) that hold T5 on the params' device in
``text_encoder.precision``; captions are looked up per shard (a DuckDB join, streamed), so the
driver never holds the subset's texts, and a worker only one shard's.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import torch
from safetensors.torch import save

from lumos.caption.noise import noisy_pairing
from lumos.config import RaySettings
from lumos.data.extract import cached_meta
from lumos.runtime import storage
from lumos.runtime.ray import run_shards

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


from lumos.caption.noise import noisy_pairing
def _captions_join(captions: Path | str | None, con) -> str:
    if captions and storage.exists(captions):
        storage.register_duckdb(con, captions)
        return f"LEFT JOIN read_parquet('{storage.normalize(captions)}') c USING (uid)"
    return "LEFT JOIN (SELECT NULL::VARCHAR AS uid, NULL::VARCHAR AS long_caption) c USING (uid)"


def shard_texts(subset: Path | str, captions: Path | str | None, shard: str) -> list[tuple[str, str, str | None]]:
    """(uid, raw caption, long caption or None) of one subset shard, in key order. The long
    captions come from the caption stage's part of that shard when there is one (beside
    ``captions``: parts/<shard>.parquet), so a shard never scans the whole caption file."""
    con = duckdb.connect()
    if captions:
        from lumos.caption.captions import part_location

        part = part_location(str(captions).rsplit("/", 1)[0], shard)
        captions = part if storage.exists(part) else captions
    rows = con.execute(f"SELECT s.uid, s.raw_caption, c.long_caption FROM '{subset}' s "
                       f"{_captions_join(captions, con)} WHERE s.shard = ? ORDER BY s.key", [shard]).fetchall()
    return [(u, raw or "", long) for u, raw, long in rows]


@dataclass(frozen=True)
class TextJob:
    subset: str
    captions: str | None
    shard: str  # the subset's shard name (what its rows say)
    target: str  # the safetensors file to write
    fingerprint: dict
    caption_noise: float = 0.0  # Fig. 2a: that share of the shard's samples takes another's captions
    noise_seed: int = 0


class TextWorker:
    """Encodes shards' captions one at a time (a Ray actor or in-process); T5 is built once by
    ``build()`` on the first shard that needs it (or given, already built)."""

    def __init__(self, build: Callable | None, batch_size: int, precision: str, encoder=None) -> None:
        self.build, self.batch_size, self.precision, self.encoder = build, batch_size, precision, encoder

    @torch.no_grad()
    def run(self, job: TextJob) -> dict:
        items = shard_texts(job.subset, job.captions, job.shard)
        wrong = 0
        if job.caption_noise:  # Fig. 2a: wrong captions, drawn within the shard (bounded memory)
            source = noisy_pairing(len(items), job.caption_noise, job.noise_seed + zlib.crc32(job.shard.encode()))
            items = [(uid, items[j][1], items[j][2]) for (uid, _, _), j in zip(items, source)]
            wrong = sum(i != j for i, j in enumerate(source))
        meta = {"fingerprint": job.fingerprint, "keys": [u for u, _, _ in items],
                "long": [lc is not None for _, _, lc in items]}
        if cached_meta(job.target) == meta:
            return {"outcome": "cached", "samples": len(items), "seconds": 0.0, "wrong_captions": wrong}
        if self.encoder is None:
            self.encoder = self.build()
        t0 = time.perf_counter()
        tensors = {}
        for kind, texts in (("raw", [r for _, r, _ in items]), ("long", [lc or "" for _, _, lc in items])):
            embs, masks = [], []
            for i in range(0, len(texts), self.batch_size):  # one batch of activations at a time
                emb, mask = self.encoder(texts[i: i + self.batch_size])
                embs.append(emb.to(DTYPES[self.precision]).cpu())
                masks.append(mask.to(torch.int8).cpu())
            tensors[f"{kind}_emb"], tensors[f"{kind}_mask"] = torch.cat(embs), torch.cat(masks)
        tensors["has_long"] = torch.tensor(meta["long"], dtype=torch.bool)
        seconds = time.perf_counter() - t0
        data = save(tensors, metadata={"keys": json.dumps(meta["keys"]), "meta": json.dumps(meta, sort_keys=True)})
        storage.write_bytes_atomic(job.target, data)
        return {"outcome": "computed", "samples": len(items), "seconds": seconds, "wrong_captions": wrong}


def extract_text_features(subset: Path | str, captions: Path | str | None, out_dir: Path | str,
                          encoder=None, batch_size: int = 64, precision: str = "fp32",
                          fingerprint: dict | None = None, *, build: Callable | None = None,
                          device: str = "cpu", ray: RaySettings | None = None,
                          on_shard: Callable[[int, int, dict], None] | None = None,
                          caption_noise: float = 0.0, noise_seed: int = 0) -> dict:
    """One T5 file per subset shard under ``out_dir`` (a folder or fsspec URL). Either ``encoder``
    (built, used in this process) or ``build`` (called once per worker, picklable for Ray).
    ``caption_noise``: that share of each shard's samples embed another sample's captions (Fig. 2a)."""
    if encoder is None and build is None:
        raise ValueError("extract_text_features needs an encoder or build=")
    out = storage.normalize(out_dir)
    storage.makedirs(out)
    subset = storage.normalize(subset)
    captions = storage.normalize(captions) if captions else None
    shards = [r[0] for r in duckdb.sql(f"SELECT DISTINCT shard FROM '{subset}' ORDER BY 1").fetchall()]
    fingerprint = dict(fingerprint or {})
    if caption_noise:
        fingerprint.update(caption_noise=caption_noise, noise_seed=noise_seed)
    jobs = [TextJob(subset, captions, shard,
                    storage.join(out, shard.split("://", 1)[-1].replace("/", "--").removesuffix(".tar")
                                 + ".safetensors"), fingerprint, caption_noise, noise_seed) for shard in shards]
    if encoder is not None:
        results = run_shards(TextWorker, (None, batch_size, precision, encoder), jobs, None, on_done=on_shard)
    else:
        results = run_shards(TextWorker, (build, batch_size, precision), jobs, ray, device=device,
                             on_done=on_shard)
    wanted = {j.target for j in jobs}
    for stale in storage.glob(out, "*.safetensors"):
        if stale not in wanted:
            storage.remove(stale)
    computed = [r for r in results if r["outcome"] == "computed"]
    seconds = sum(r["seconds"] for r in results)
    samples = sum(r["samples"] for r in computed)
    return {"computed": len(computed), "cached": len(results) - len(computed),
            "samples": sum(r["samples"] for r in results), "seconds": seconds,
            "wrong_captions": sum(r["wrong_captions"] for r in results),
            "seconds_per_sample": seconds / samples if samples else None}
