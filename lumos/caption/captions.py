"""Stage `caption`: long captions for the T2I subset, one parquet per shard, then one file.

Shards fan out to Ray actors (lumos/runtime/ray.py) that hold InternVL on the params' device
in ``captioner.precision``; each streams its tar (local or fsspec URL) and decodes
``decode_batch`` images at a time, so memory is bounded by batch x workers, never by a shard.
Parts and ``captions.parquet`` live under the ``storage.captions`` root (a folder or a bucket).

A shard's part is written atomically when the shard is done, so a killed run loses at most
the shard in flight, and a rerun skips the finished parts. A part records the model id,
prompt and generation settings; a part made with other settings is captioned again.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from lumos.config import RaySettings
from lumos.data.extract import iter_image_batches
from lumos.io import copy_to_parquet
from lumos.runtime import storage
from lumos.runtime.ray import run_shards

CAPTIONS_SCHEMA = pa.schema([("uid", pa.string()), ("key", pa.string()), ("long_caption", pa.string()),
                             ("model_id", pa.string()), ("prompt", pa.string()),
                             ("generation", pa.string())])


def _part_name(shard: str) -> str:
    return shard.split("://", 1)[-1].replace("/", "--").removesuffix(".tar") + ".parquet"


def part_location(captions_root: str, shard: str) -> str:
    """Where the caption stage writes one shard's part."""
    return storage.join(captions_root, "parts", _part_name(shard))


def subset_shards(subset: Path | str) -> dict[str, list[tuple[str, str, str]]]:
    """shard -> [(uid, key, member)] of the T2I subset, in (shard, key) order."""
    rows = duckdb.sql(f"SELECT uid, key, shard, member FROM '{subset}' ORDER BY shard, key").fetchall()
    shards: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for uid, key, shard, member in rows:
        shards[shard].append((uid, key, member))
    return dict(shards)


def _read_part(location: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(location)))


@dataclass(frozen=True)
class CaptionJob:
    shard: str  # the tar (local path or URL)
    items: list[tuple[str, str, str]]  # (uid, key, member) in subset order
    part: str  # the parquet to write
    generation: dict  # what the captions depend on (Captioner.generation_config)


class CaptionWorker:
    """Captions shards one at a time (a Ray actor or in-process); InternVL is built once, on the
    first shard that needs it, by ``build()`` (or given, already built)."""

    def __init__(self, build: Callable | None, decode_batch: int, captioner=None) -> None:
        self.build, self.decode_batch, self.captioner = build, decode_batch, captioner

    def run(self, job: CaptionJob) -> dict:
        gen_json = json.dumps(job.generation, sort_keys=True)
        uids = [u for u, _, _ in job.items]
        if storage.exists(job.part):
            done = _read_part(job.part)
            if done.column("uid").to_pylist() == uids and set(done.column("generation").to_pylist()) <= {gen_json}:
                return {"outcome": "cached", "images": 0, "seconds": 0.0}
        if self.captioner is None:
            self.captioner = self.build()
        t0 = time.perf_counter()
        texts: list[str | None] = [None] * len(job.items)
        for positions, images in iter_image_batches(job.shard, [(k, m) for _, k, m in job.items],
                                                     self.decode_batch):
            for i, text in zip(positions, self.captioner.caption(images)):
                texts[i] = text
        seconds = time.perf_counter() - t0
        g = job.generation
        table = pa.Table.from_pylist([
            {"uid": u, "key": k, "long_caption": text, "model_id": g["model_id"], "prompt": g["prompt"],
             "generation": gen_json} for (u, k, _), text in zip(job.items, texts)], schema=CAPTIONS_SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        storage.write_bytes_atomic(job.part, sink.getvalue().to_pybytes())
        return {"outcome": "captioned", "images": len(job.items), "seconds": seconds}


def combine_parts(parts: list[str], target: str) -> None:
    """All parts in one parquet ordered by uid (DuckDB streams it), written atomically."""
    con = duckdb.connect()
    if parts:
        storage.register_duckdb(con, parts[0])
    query = f"SELECT * FROM read_parquet({parts}) ORDER BY uid"
    if "://" not in target:
        copy_to_parquet(con, query, target)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "captions.parquet"
        copy_to_parquet(con, query, local)
        fs, path = storage.fs_and_path(target)
        fs.put_file(str(local), path)  # one PUT (or a completed multipart upload): whole or nothing


def caption_subset(subset: Path | str, out_dir: Path | str, captioner=None, stop_after: int | None = None, *,
                   build: Callable | None = None, generation: dict | None = None, decode_batch: int = 64,
                   device: str = "cpu", ray: RaySettings | None = None,
                   on_shard: Callable[[int, int, dict], None] | None = None) -> dict:
    """Caption every image of ``subset.parquet`` into ``out_dir`` (a folder or fsspec URL);
    returns counts and images/s.

    Either ``captioner`` (built, used in this process) or ``build`` (called once per worker,
    picklable for Ray) with ``generation``, the provenance the built captioner will report.
    ``stop_after`` ends after that many shards (as a kill would), for tests.
    """
    if captioner is None and (build is None or generation is None):
        raise ValueError("caption_subset needs a captioner, or build= and generation=")
    out = storage.normalize(out_dir)
    parts = storage.join(out, "parts")
    storage.makedirs(parts)
    generation = generation or captioner.generation_config()
    shards = subset_shards(subset)
    jobs = [CaptionJob(storage.normalize(shard), items, part_location(out, shard), generation)
            for shard, items in shards.items()]
    jobs = jobs[:stop_after] if stop_after is not None else jobs
    if captioner is not None:
        results = run_shards(CaptionWorker, (None, decode_batch, captioner), jobs, None, on_done=on_shard)
    else:
        results = run_shards(CaptionWorker, (build, decode_batch), jobs, ray, device=device, on_done=on_shard)
    wanted = {part_location(out, s) for s in shards}
    for stale in storage.glob(parts, "*.parquet"):
        if stale not in wanted:
            storage.remove(stale)
    finished = storage.glob(parts, "*.parquet")
    if stop_after is None and finished:
        combine_parts(finished, storage.join(out, "captions.parquet"))
    seconds = sum(r["seconds"] for r in results)
    counts = {"shards_captioned": sum(r["outcome"] == "captioned" for r in results),
              "shards_cached": sum(r["outcome"] == "cached" for r in results),
              "images_captioned": sum(r["images"] for r in results), "seconds": seconds}
    counts["images_per_s"] = counts["images_captioned"] / seconds if seconds else None
    return counts
