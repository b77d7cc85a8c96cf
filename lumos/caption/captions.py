"""Stage `caption`: long captions for the T2I subset, one parquet per shard, then one file.

A shard's part is written atomically when the shard is done, so a killed run loses at most
the shard in flight, and a rerun skips the finished parts. A part records the model id,
prompt and generation settings; a part made with other settings is captioned again.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from lumos.data.extract import load_images
from lumos.io import copy_to_parquet

CAPTIONS_SCHEMA = pa.schema([("uid", pa.string()), ("key", pa.string()), ("long_caption", pa.string()),
                             ("model_id", pa.string()), ("prompt", pa.string()),
                             ("generation", pa.string())])


def _part_name(shard: str) -> str:
    return shard.replace("/", "--").removesuffix(".tar") + ".parquet"


def caption_subset(subset: Path | str, out_dir: Path | str, captioner, stop_after: int | None = None) -> dict:
    """Caption every image of ``subset.parquet`` into ``out_dir``; returns counts and images/s.

    ``captioner`` has ``caption(images) -> list[str]`` and ``generation_config() -> dict``;
    ``stop_after`` ends after that many shards (as a kill would), for tests.
    """
    out = Path(out_dir)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    rows = duckdb.sql(f"SELECT uid, key, shard, member FROM '{subset}' ORDER BY shard, key").fetchall()
    shards: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for uid, key, shard, member in rows:
        shards[shard].append((uid, key, member))
    generation = captioner.generation_config()
    gen_json = json.dumps(generation, sort_keys=True)
    counts = {"shards_captioned": 0, "shards_cached": 0, "images_captioned": 0, "seconds": 0.0}
    for i, (shard, items) in enumerate(tqdm(shards.items(), desc="caption", dynamic_ncols=True)):
        if stop_after is not None and i >= stop_after:
            break
        part = parts / _part_name(shard)
        if part.exists():
            done = pq.read_table(part)
            if (done.column("uid").to_pylist() == [u for u, _, _ in items]
                    and set(done.column("generation").to_pylist()) <= {gen_json}):
                counts["shards_cached"] += 1
                continue
        t0 = time.perf_counter()
        texts = captioner.caption(load_images(shard, [(k, m) for _, k, m in items]))
        counts["seconds"] += time.perf_counter() - t0
        table = pa.Table.from_pylist([
            {"uid": u, "key": k, "long_caption": text, "model_id": generation["model_id"],
             "prompt": generation["prompt"], "generation": gen_json}
            for (u, k, _), text in zip(items, texts)], schema=CAPTIONS_SCHEMA)
        tmp = part.with_name(f".{part.name}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(part)
        counts["shards_captioned"] += 1
        counts["images_captioned"] += len(items)
    wanted = {_part_name(s) for s in shards}
    for stale in parts.glob("*.parquet"):
        if stale.name not in wanted:
            stale.unlink()
    finished = sorted(str(p) for p in parts.glob("*.parquet"))
    if stop_after is None and finished:
        copy_to_parquet(duckdb.connect(), f"SELECT * FROM read_parquet({finished}) ORDER BY uid",
                        out / "captions.parquet")
    counts["images_per_s"] = counts["images_captioned"] / counts["seconds"] if counts["seconds"] else None
    return counts
