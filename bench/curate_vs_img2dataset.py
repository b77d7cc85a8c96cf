"""Benchmark: lumos's whole curation of one source against a bare img2dataset download.

Builds a mini-world of ``--images`` good images (plus the default bad rows) in a temp folder,
serves it on a free loopback port, and times, in this one process, on the same metadata:

  raw   img2dataset.download of metadata.parquet (url_col URL, webdataset, no re-encoding, the
        tiny profile's processes / threads / timeout / retries / shard size): download only
  ours  select_source + download_and_score (img2dataset's download with each finished shard
        scored meanwhile: decode, pHash, tiny CLIP aesthetic; curation.score_while_downloading)
        + keep_source, the lumos curation of that source; ``--sequential``: download_source, then
        score_source (the path with score_while_downloading: false)

Throughput is input metadata rows per second; target: ours / raw >= 0.9x. `select` drops rows
before anything is fetched (that helps ours), so the rate over the rows each one actually
downloaded is printed too, and raw img2dataset on ours' selected rows alone (the same fetch:
what img2dataset's fixed start-up leaves of the per-fetched-row rate).

    .venv/bin/python bench/curate_vs_img2dataset.py              # 2000 images
    .venv/bin/python bench/curate_vs_img2dataset.py --images 300
    .venv/bin/python bench/curate_vs_img2dataset.py --server-process --also-sequential
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
# Before img2dataset is imported, here and in its spawned workers (which re-import this module).
os.environ.update(NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_process(root: Path, port: int) -> Iterator[str]:
    """``root`` on 127.0.0.1:``port`` by ``python -m http.server`` (a ThreadingHTTPServer) in its
    own process, stopped when the block exits."""
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"http.server did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def same_scores(a: Path, b: Path, atol: float = 1e-6) -> bool:
    """Two score files hold the same rows: every column equal, floats within ``atol`` (the CLIP
    forward rounds differently under another torch thread count: about 4e-8 measured)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = pq.read_table(a).sort_by("key"), pq.read_table(b).sort_by("key")
    if x.schema != y.schema or x.num_rows != y.num_rows:
        return False
    for name in x.column_names:
        u, v = x[name].to_numpy(zero_copy_only=False), y[name].to_numpy(zero_copy_only=False)
        if pa.types.is_floating(x.schema.field(name).type):
            if not np.allclose(u, v, rtol=0, atol=atol, equal_nan=True):
                return False
        elif not x[name].equals(y[name]):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000, help="good images in the mini-world")
    ap.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    ap.add_argument("--sequential", action="store_true", help="score after the whole download")
    ap.add_argument("--server-process", action="store_true",
                    help="serve the mini-world from its own process (python -m http.server), as a remote "
                         "server would be, instead of a thread of this process (which scoring in this "
                         "process competes with for the GIL)")
    ap.add_argument("--also-sequential", action="store_true",
                    help="then the sequential path too, in the same run (same load), and check that "
                         "both wrote the same scores")
    args = ap.parse_args()

    import pyarrow.parquet as pq
    from img2dataset import download
    from lumos.config import Source, load_profile
    from lumos.curation.download import download_source, download_status
    from lumos.curation.fetch import download_and_score
    from lumos.curation.keep import keep_source
    from lumos.curation.score import score_source
    from lumos.curation.select import select_source
    from lumos.demo import build_mini_world, serve_directory

    p = load_profile(PARAMS)
    cur, dl = p.curation, p.curation.download
    port = free_port()
    world_cfg = p.mini_world.model_copy(update={"n_images": args.images,
                                                "base_url": f"http://127.0.0.1:{port}"})
    with tempfile.TemporaryDirectory(prefix="curbench-") as tmp:
        work = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        rows = build_mini_world(world_cfg, work / "world")["rows"]
        print(f"mini-world: {rows} metadata rows ({args.images} good images) "
              f"built in {time.perf_counter() - t0:.1f} s")
        meta = work / "world" / "metadata.parquet"
        pq.write_table(pq.read_table(meta).slice(0, 8), work / "warmup.parquet")

        def raw(url_list: Path, out: Path, url_col: str = "URL", caption_col: str = "TEXT") -> None:
            download(url_list=str(url_list), input_format="parquet", url_col=url_col,
                     caption_col=caption_col, output_format="webdataset", output_folder=str(out),
                     processes_count=dl.processes, thread_count=dl.threads, timeout=dl.timeout_s,
                     retries=dl.retries, resize_mode=dl.resize_mode, image_size=dl.image_size,
                     encode_format=dl.encode_format, disable_all_reencoding=True,
                     number_sample_per_shard=dl.samples_per_shard, distributor=dl.distributor,
                     enable_wandb=False)

        with (serve_in_process(work / "world", port) if args.server_process
              else serve_directory(work / "world", port=port)):
            raw(work / "warmup.parquet", work / "warmup")  # untimed: warms caches for both runs
            t0 = time.perf_counter()
            raw(meta, work / "raw" / "shards")
            raw_s = time.perf_counter() - t0
            raw_ok = download_status(work / "raw")["status"].get("success", 0)

            source = Source(name="bench", reader="laion", metadata=str(meta))
            ours, t = {}, time.perf_counter()
            selected = select_source(cur, source, work / "select")["selected"]
            ours["select"] = time.perf_counter() - t
            t = time.perf_counter()
            if args.sequential:
                ours_ok = download_source(work / "select" / "selected.parquet", work / "download",
                                          dl)["status"].get("success", 0)
                ours["download"] = time.perf_counter() - t
                t = time.perf_counter()
                score_source(work / "download", work / "scores", cur.score)
                ours["score"] = time.perf_counter() - t
            else:
                fetched = download_and_score(work / "select" / "selected.parquet", work / "download",
                                             work / "scores", dl, cur.score)
                ours_ok = fetched["download"]["status"].get("success", 0)
                ours["download+score"] = time.perf_counter() - t
                print(f"download_and_score: {fetched['seconds']}")
            # raw img2dataset on the very rows ours fetched: its fixed start-up (worker processes,
            # imports) over 393 rows instead of 2026, i.e. what bounds ours per fetched row
            t = time.perf_counter()
            raw(work / "select" / "selected.parquet", work / "raw-same" / "shards", "url", "caption")
            raw_same_s = time.perf_counter() - t
            if args.also_sequential and not args.sequential:
                seq, t = {"select": ours["select"]}, time.perf_counter()
                download_source(work / "select" / "selected.parquet", work / "seq-download", dl)
                seq["download"] = time.perf_counter() - t
        if args.also_sequential and not args.sequential:
            t = time.perf_counter()
            score_source(work / "seq-download", work / "seq-scores", cur.score)
            seq["score"] = time.perf_counter() - t
            # two downloads of the same rows: img2dataset's threads write each tar in their own
            # finishing order, so compare the rows by key
            same = all(same_scores(a, work / "seq-scores" / a.name) for a in sorted((work / "scores").glob("*.parquet")))
        t = time.perf_counter()
        kept = keep_source(work / "select" / "selected.parquet", work / "download",
                           work / "scores", work / "keep", cur.keep)["kept"]
        ours["keep"] = time.perf_counter() - t
        if args.also_sequential and not args.sequential:
            seq["keep"] = ours["keep"]
    ours_s = sum(ours.values())

    print(f"\nprocesses {dl.processes}, threads {dl.threads}, timeout {dl.timeout_s} s, "
          f"retries {dl.retries}; {rows} input rows")
    print(f"{'run':6} {'seconds':>8} {'fetched':>8} {'success':>8} {'input rows/s':>13} {'fetched/s':>10}")
    print(f"{'raw':6} {raw_s:8.2f} {rows:8} {raw_ok:8} {rows / raw_s:13.1f} {rows / raw_s:10.1f}")
    print(f"{'ours':6} {ours_s:8.2f} {selected:8} {ours_ok:8} {rows / ours_s:13.1f} "
          f"{selected / ours_s:10.1f}")
    print("ours by stage: " + ", ".join(f"{k} {v:.2f} s" for k, v in ours.items())
          + f"; kept {kept} of {selected} selected")
    ratio = raw_s / ours_s
    print(f"\nours/raw over input rows: {ratio:.2f}x (target >= 0.9x: "
          f"{'met' if ratio >= 0.9 else 'not met'})")
    print(f"ours/raw over fetched rows: {(selected / ours_s) / (rows / raw_s):.2f}x "
          f"(select let {selected} of {rows} rows ({selected / rows:.0%}) through to download)")
    print(f"raw img2dataset on the {selected} selected rows alone: {raw_same_s:.2f} s, "
          f"{selected / raw_same_s:.1f} rows/s ({(selected / raw_same_s) / (rows / raw_s):.2f}x raw's "
          f"rate over {rows}); ours/raw on the same rows: {raw_same_s / ours_s:.2f}x")
    if "download" in ours:
        print(f"download stage alone, fetched rows/s: ours {selected / ours['download']:.1f} "
              f"vs raw {rows / raw_s:.1f}")
    print(f"RESULT fetched_ratio={(selected / ours_s) / (rows / raw_s):.2f} "
          f"mode={'sequential' if args.sequential else 'score_while_downloading'}")
    if args.also_sequential and not args.sequential:
        seq_s = sum(seq.values())
        print("sequential by stage: " + ", ".join(f"{k} {v:.2f} s" for k, v in seq.items())
              + f"; scores identical to score_while_downloading's: {same}")
        print(f"RESULT fetched_ratio={(selected / seq_s) / (rows / raw_s):.2f} mode=sequential "
              f"(same rows: {raw_same_s / seq_s:.2f}x)")


if __name__ == "__main__":
    main()
