"""The T5 cache (supplement H.2): embeddings of both caption kinds, per subset shard, so that
training never runs T5. Each file holds, in ``keys`` (uid) order: ``raw_emb``/``raw_mask`` and
``long_emb``/``long_mask`` (B, L, d) / (B, L), and ``has_long`` (B,) for the mixing fallback."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import duckdb
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from lumos.caption.noise import noisy_pairing
from lumos.data.features import read_feature_meta

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def extract_text_features(subset: Path | str, captions: Path | str | None, out_dir: Path | str,
                          encoder, batch_size: int, precision: str, fingerprint: dict,
                          caption_noise: float = 0.0, noise_seed: int = 0) -> dict:
    """``caption_noise``: that share of the samples embed another sample's captions (Fig. 2a)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    join = (f"LEFT JOIN read_parquet('{captions}') c USING (uid)" if captions and Path(captions).exists()
            else "LEFT JOIN (SELECT NULL::VARCHAR AS uid, NULL::VARCHAR AS long_caption) c USING (uid)")
    rows = duckdb.sql(f"SELECT s.shard, s.uid, s.raw_caption, c.long_caption FROM '{subset}' s {join} "
                      "ORDER BY s.shard, s.key").fetchall()
    if caption_noise:  # Fig. 2a: wrong captions, drawn over the whole set
        source = noisy_pairing(len(rows), caption_noise, noise_seed)
        rows = [(shard, uid, rows[j][2], rows[j][3]) for (shard, uid, _, _), j in zip(rows, source)]
        fingerprint = {**fingerprint, "caption_noise": caption_noise, "noise_seed": noise_seed}
    shards: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
    for shard, uid, raw, long in rows:
        shards[shard].append((uid, raw or "", long))
    counts = {"computed": 0, "cached": 0, "samples": 0, "seconds": 0.0,
              "wrong_captions": sum(i != j for i, j in enumerate(source)) if caption_noise else 0}
    wanted = set()
    for shard, items in tqdm(shards.items(), desc="t5 cache", dynamic_ncols=True):
        target = out / (shard.replace("/", "--").removesuffix(".tar") + ".safetensors")
        wanted.add(target.name)
        meta = {"fingerprint": fingerprint, "keys": [u for u, _, _ in items],
                "long": [lc is not None for _, _, lc in items]}
        counts["samples"] += len(items)
        if target.exists() and read_feature_meta(target) == meta:
            counts["cached"] += 1
            continue
        t0 = time.perf_counter()
        tensors = {}
        for kind, texts in (("raw", [r for _, r, _ in items]), ("long", [lc or "" for _, _, lc in items])):
            embs, masks = zip(*(encoder(texts[i: i + batch_size]) for i in range(0, len(texts), batch_size)))
            tensors[f"{kind}_emb"] = torch.cat(embs).to(DTYPES[precision]).cpu()
            tensors[f"{kind}_mask"] = torch.cat(masks).to(torch.int8).cpu()
        tensors["has_long"] = torch.tensor(meta["long"], dtype=torch.bool)
        counts["seconds"] += time.perf_counter() - t0
        tmp = target.with_name(f".{target.name}.tmp")
        save_file(tensors, str(tmp), metadata={"keys": json.dumps(meta["keys"]),
                                                "meta": json.dumps(meta, sort_keys=True)})
        tmp.replace(target)
        counts["computed"] += 1
    for stale in out.glob("*.safetensors"):
        if stale.name not in wanted:
            stale.unlink()
    computed = counts["samples"] if counts["computed"] else 0
    counts["seconds_per_sample"] = counts["seconds"] / computed if computed else None
    return counts
