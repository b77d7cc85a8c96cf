"""Benchmark: `score` + `features-i2i` on 2 local Ray workers against 1, on the same shards.

Starts one local Ray (2 CPUs, 127.0.0.1) and times, for one worker slot (cpus_per_task 2) and
two (cpus_per_task 1), scoring ``--shards`` shards and encoding them (tiny profile models),
each into a fresh output folder, twice:

  cold  the first pass: the shard hosts (lumos.runtime.ray.ShardHost) start, import torch and
        open_clip and build the models inside the timed region;
  warm  the same stages again into fresh folders, ``--repeats`` times: the hosts are up with
        their imports done (each stage still builds its models), as in a stage over thousands of
        shards after its first few. Each side keeps its fastest warm pass: on a shared machine
        a pass that another process slowed down says nothing about Ray.

Ray's own start-up is excluded. Target: >= 1.6x. Last line: ``RESULT speedup=<warm x>`` (the
cold figure is printed above it). On a shared machine the figure is contended: other processes
take the same cores.

    python bench/ray_scaling.py                 # 16 shards x 128 images of 384 px, about 2 min

The default is sized so that the shard work outweighs what every pass pays once per worker
(each stage builds its models on each worker): at 4 x 64 the same machine measured 1.36x idle.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scale_memory import tiny_build, tiny_settings, write_catalog, write_shard  # noqa: E402


def run_stages(work: Path, out: Path, settings) -> float:
    from lumos.curation.score import score_source
    from lumos.data.extract import extract_features

    start = time.perf_counter()
    score_source(work / "download", out / "scores", tiny_settings(), ray=settings, decode_batch=16)
    extract_features(work / "catalog.duckdb", out / "features", tiny_build(), 64, 16, {}, ray=settings)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=3, help="warm passes per side (the fastest counts)")
    args = ap.parse_args()
    from lumos.config import RaySettings
    from lumos.runtime.ray import release_hosts, ensure_ray

    ensure_ray(RaySettings(num_cpus=2, num_gpus=0))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for s in range(args.shards):
            write_shard(work / "download", args.images, args.side, name=f"{s:05d}")
        write_catalog(work, work / "download")
        times = {}
        for workers in (1, 2):
            settings = RaySettings(num_cpus=2, num_gpus=0, cpus_per_task=2.0 / workers)
            for run in ["cold"] + [f"warm{i}" for i in range(args.repeats)]:
                times[workers, run] = run_stages(work, work / f"out{workers}-{run}", settings)
                print(f"{workers} Ray worker(s), {run}: {times[workers, run]:.1f} s for {args.shards} "
                      f"shards x {args.images} images (score + features-i2i)", flush=True)
            times[workers, "warm"] = min(times[workers, f"warm{i}"] for i in range(args.repeats))
            release_hosts()  # the next side starts its own hosts
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} (shared: the figure is contended)")
    print(f"cold speedup (host start-up included): {times[1, 'cold'] / times[2, 'cold']:.2f}")
    print(f"RESULT speedup={times[1, 'warm'] / times[2, 'warm']:.2f}")


if __name__ == "__main__":
    main()
