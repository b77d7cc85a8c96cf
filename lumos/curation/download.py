"""Stage `download`: img2dataset fetches the selected URLs into WebDataset shards.

``out`` is a local folder or a bucket URL (img2dataset writes through fsspec; credentials and
endpoint from the environment, lumos/runtime/storage.py). img2dataset writes into ``<out>/shards/``, per shard, ``<n>.tar`` (the samples), ``<n>.parquet`` (every row with
``status`` / ``error_message``) and ``<n>_stats.json`` (written last). Its ``incremental``
mode skips shards whose stats exist, so a run killed at any point resumes where it stopped
with no sample lost or duplicated. A fingerprint of the URL list and the settings guards the
folder: if either changes, the old shards are removed before downloading again.

img2dataset starts worker processes by spawning: call :func:`download_source` from code that
runs under ``if __name__ == "__main__"`` (the flows do).

``distributor: ray``: img2dataset submits one Ray task per shard (each its own ``thread_count``
threads, 1 CPU) to the Ray this process is connected to; the stage first joins the run's Ray as
params ``ray`` says (:func:`lumos.runtime.ray.ensure_ray`), so the download fans out on the same
local Ray or cluster as the other per-shard stages instead of a second Ray img2dataset would
start by itself. On a cluster, ``out`` must be a location every node reaches (a bucket).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import duckdb

from lumos.config import Download, RaySettings
from lumos.runtime import storage

FINGERPRINT = "fingerprint.json"


def _fingerprint(selected: Path, dl: Download) -> dict:
    digest = hashlib.sha256(selected.read_bytes()).hexdigest()
    settings = dl.model_dump(exclude={"processes", "threads", "distributor", "timeout_s", "retries"})
    return {"selected_sha256": digest, "settings": settings}


def _prepare(out: str, fingerprint: dict) -> None:
    """Keep finished shards only when they came from the same URL list and settings."""
    path = storage.join(out, FINGERPRINT)  # beside shards/: img2dataset reads every *.json in its folder
    if storage.exists(out) and (not storage.exists(path) or json.loads(storage.read_bytes(path)) != fingerprint):
        fs, root = storage.fs_and_path(out)
        fs.rm(root, recursive=True)
    storage.makedirs(storage.join(out, "shards"))
    storage.write_bytes_atomic(path, (json.dumps(fingerprint, indent=1, sort_keys=True) + "\n").encode())


# img2dataset's distributors and the package each needs; without it img2dataset's `ray` silently
# downloads nothing (DESIGN 6), so the stage checks first.
DISTRIBUTOR_PACKAGES = {"multiprocessing": None, "pyspark": "pyspark", "ray": "ray"}


def check_distributor(name: str) -> None:
    """Fail with the fix when the distributor's package is not installed."""
    import importlib.util

    package = DISTRIBUTOR_PACKAGES[name]
    if package and importlib.util.find_spec(package) is None:
        raise RuntimeError(f"curation.download.distributor is {name!r} but {package!r} is not installed: "
                           f"pip install {package} (and start its cluster), or use 'multiprocessing'")


def download_source(selected: Path | str, out_dir: Path | str, dl: Download,
                    ray: RaySettings | None = None, on_ready: Callable[[int], None] | None = None) -> dict:
    """Download one source's selection into ``out_dir`` (resumable); returns status counts.
    ``ray``: where ``distributor: ray`` runs (default: ``RaySettings()``, the run's local Ray).
    ``on_ready(shards)``: called once the folder is prepared (old shards of another selection
    removed), before img2dataset starts, with the number of shards the selection makes."""
    check_distributor(dl.distributor)
    if dl.distributor == "ray":
        from lumos.runtime.ray import ensure_ray, release_hosts

        ensure_ray(ray or RaySettings())
        release_hosts()  # idle shard hosts of an earlier stage would hold the CPUs its tasks need
    from img2dataset import download  # heavy import (albumentations, cv2): only when used

    selected, out = Path(selected), storage.normalize(out_dir)  # out: a folder or a bucket URL
    _prepare(out, _fingerprint(selected, dl))
    n_rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{selected}')").fetchall()[0][0]
    shards = -(-n_rows // dl.samples_per_shard)  # img2dataset's shards 0..shards-1
    if on_ready:
        on_ready(shards)
    # every shard finished (a rerun): img2dataset would only start its processes to skip them all
    done = dl.incremental_mode == "incremental" and len(storage.glob(out, "shards/*_stats.json")) >= shards
    if n_rows and not done:
        download(
            url_list=str(selected),
            input_format="parquet",
            url_col="url",
            caption_col="caption",
            save_additional_columns=["uid", "source"],
            output_format="webdataset",
            output_folder=storage.join(out, "shards"),
            processes_count=dl.processes,
            thread_count=dl.threads,
            timeout=dl.timeout_s,
            retries=dl.retries,
            resize_mode=dl.resize_mode,
            image_size=dl.image_size,
            encode_format=dl.encode_format,
            disable_all_reencoding=dl.disable_all_reencoding,
            number_sample_per_shard=dl.samples_per_shard,
            incremental_mode=dl.incremental_mode,
            distributor=dl.distributor,
            enable_wandb=False,
            compute_hash="sha256",
        )
    return download_status(out)


def download_status(out_dir: Path | str) -> dict:
    """Counts of img2dataset's per-sample ``status`` over the finished shards."""
    shards = storage.glob(out_dir, "shards/*_stats.json")
    if not shards:
        return {"shards": 0, "status": {}}
    parquets = [str(p).replace("_stats.json", ".parquet") for p in shards]
    con = duckdb.connect()
    storage.register_duckdb(con, out_dir)
    rows = con.sql(
        f"SELECT status, count(*) FROM read_parquet({parquets}) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return {"shards": len(shards), "status": dict(rows)}
