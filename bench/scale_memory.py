"""Benchmark: peak memory of `score`, `features-i2i`, `caption` and `evaluate-i2i` at 1x and 10x
the shard size.

Writes img2dataset-layout shards of ``--side``-pixel JPEGs (``--size`` and 10 x ``--size``
images per shard) and, for each stage and size, runs the stage's shard worker (the code a Ray
actor runs; for evaluate-i2i, the stage's bounded generate-and-measure loop over the same images
as files) in a fresh process and reads its peak RSS. Streaming decode keeps at most ``--batch``
decoded images per worker, so the peak should not grow with the shard:
target ratio (10x / 1x) <= 1.3 for each stage. Last line: ``RESULT max_rss_ratio=<largest>``.

    python bench/scale_memory.py                    # 50 vs 500 images of 512 px per shard
    python bench/scale_memory.py --size 100         # 100 vs 1000 (the issue's example)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_shard(root: Path, n: int, side: int, name: str = "00000") -> Path:
    """One img2dataset-layout shard of ``n`` distinct JPEGs (and its stats file, written last)."""
    import numpy as np
    from PIL import Image

    (root / "shards").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(name))
    with tarfile.open(root / "shards" / f"{name}.tar", "w") as tar:
        for i in range(n):
            small = rng.integers(0, 255, (side // 16, side // 16, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(small).resize((side, side)).save(buf, "JPEG", quality=90)
            key = f"{name}{i:05d}"
            for ext, data in (("jpg", buf.getvalue()), ("json", json.dumps({"uid": key}).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (root / "shards" / f"{name}_stats.json").write_text("{}")
    return root


def write_catalog(work: Path, download: Path) -> Path:
    """A catalog whose `images` view lists every sample of the shards (what features-i2i reads)."""
    import duckdb

    from lumos.curation.catalog import build_catalog

    for d in ("keep/s", "select/s"):
        (work / d).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("CREATE TABLE k (key VARCHAR, source VARCHAR, shard VARCHAR, member VARCHAR, width BIGINT, "
                "height BIGINT, aesthetic DOUBLE, caption VARCHAR, status VARCHAR, uid VARCHAR, url VARCHAR, "
                "phash UBIGINT)")
    for tar in sorted((download / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            keys = sorted({m.name.split(".")[0] for m in t.getmembers()})
        # random pHashes: the catalog's near-duplicate dedup drops none of the synthetic images
        con.executemany("INSERT INTO k VALUES (?,?,?,?,0,0,6.0,'',' kept',?,'',?)",
                        [(k, "s", str(tar), f"{k}.jpg", k,
                          int.from_bytes(hashlib.sha256(k.encode()).digest()[:8])) for k in keys])
    con.execute(f"COPY k TO '{work / 'keep/s/kept.parquet'}' (FORMAT parquet)")
    empty = "SELECT 'x' uid, 's' source, 'u' url, 'keep' stage, 'r' reason WHERE false"
    for d in ("keep/s", "select/s"):
        con.execute(f"COPY ({empty}) TO '{work / d / 'rejects.parquet'}' (FORMAT parquet)")
    from lumos.config import load_profile

    # source "s" is in no profile: no quota, no per-source rule
    build_catalog(work / "select", work / "keep", work / "catalog.duckdb", load_profile(ROOT / "params.yaml").curation)
    return work / "catalog.duckdb"


def tiny_settings():
    from lumos.config import Aesthetic, ScoreSettings

    return ScoreSettings(max_pixels=10**8, aesthetic=Aesthetic(
        clip_model="lumos-tiny-clip", clip_pretrained=None, batch_size=16))


def tiny_build():
    from functools import partial

    from lumos.config import VAE, VisionEncoder
    from lumos.tasks.i2i_stages import build_encoders

    return partial(build_encoders, VAE(pretrained=None), VisionEncoder(pretrained=None, resolution=64))


def write_subset(work: Path, download: Path) -> Path:
    """A T2I subset over every sample of the shards (what caption reads)."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE s (uid VARCHAR, key VARCHAR, source VARCHAR, shard VARCHAR, member VARCHAR, "
                "raw_caption VARCHAR)")
    for tar in sorted((download / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            keys = sorted({m.name.split(".")[0] for m in t.getmembers()})
        con.executemany("INSERT INTO s VALUES (?,?,'s',?,?,'')", [(k, k, str(tar), f"{k}.jpg") for k in keys])
    con.execute(f"COPY s TO '{work / 'subset.parquet'}' (FORMAT parquet)")
    return work / "subset.parquet"


def write_files(work: Path, download: Path) -> Path:
    """The shards' images as files (what evaluate-i2i reads: a held-out folder)."""
    out = work / "val" / "n00000000"
    out.mkdir(parents=True, exist_ok=True)
    for tar in sorted((download / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".jpg"):
                    (out / m.name).write_bytes(t.extractfile(m).read())
    return work / "val"


def run_caption(work: Path, batch: int) -> None:
    from lumos.caption.captions import caption_subset
    from lumos.caption.internvl import CaptionSettings, Captioner

    settings = CaptionSettings(model=None, max_new_tokens=4, batch_size=8, precision="fp32")
    caption_subset(work / "subset.parquet", work / "captions", Captioner(settings, "cpu"), decode_batch=batch)


def run_evaluate_i2i(work: Path, batch: int) -> None:
    """evaluate-i2i's measuring loop (lumos/eval/batched.py) with a tiny random DiT, VAE and encoder."""
    import torch

    from lumos.config import VAE, Diffusion, VisionEncoder
    from lumos.encoders import build_vae, build_vision_encoder
    from lumos.eval.batched import i2i_variation_features
    from lumos.eval.features import TinyImageFeatures
    from lumos.eval.image_metrics import frechet_kernel_distances
    from lumos.eval.references import imagenet_val
    from lumos.models import ConditionedDiT

    res = 32
    vae = build_vae(VAE(pretrained=None))
    encoder = build_vision_encoder(VisionEncoder(pretrained=None, resolution=res))
    tokens = encoder(torch.zeros(1, 3, res, res))
    model = ConditionedDiT(variant="tiny", latent_channels=vae.latent_channels, latent_size=res // vae.downsample,
                           condition_dim=tokens.shape[-1], condition_tokens=tokens.shape[1]).eval()
    paths = imagenet_val(work / "val", 10**9)
    gen, ref = i2i_variation_features(model, vae, encoder, TinyImageFeatures(64, 64, 0), paths, res,
                                      Diffusion(sample_steps=2), 0, batch)
    frechet_kernel_distances(gen, ref, 10, 50)


def child(stage: str, work: Path, batch: int) -> None:
    """Run one stage in-process (the shard worker a Ray actor runs) and print the peak RSS (MB)."""
    if stage == "score":
        from lumos.curation.score import score_source

        score_source(work / "download", work / "scores", tiny_settings(), decode_batch=batch)
    elif stage == "caption":
        run_caption(work, batch)
    elif stage == "evaluate-i2i":
        run_evaluate_i2i(work, batch)
    else:
        from lumos.data.extract import extract_features

        extract_features(work / "catalog.duckdb", work / "features", tiny_build(), 64, batch, {},
                         device="cpu")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_mb(stage: str, work: Path, batch: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", stage, "--work", str(work),
                          "--batch", str(batch)], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


STAGES = ("score", "features", "caption", "evaluate-i2i")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=50, help="images per shard at 1x")
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16, help="decode batch (params ray.decode_batch)")
    ap.add_argument("--child", choices=STAGES)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.work, args.batch)
        return
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        works = {}
        for scale in (1, 10):
            work = Path(tmp) / f"x{scale}"
            write_shard(work / "download", args.size * scale, args.side)
            write_catalog(work, work / "download")
            write_subset(work, work / "download")
            write_files(work, work / "download")
            works[scale] = work
        for stage in STAGES:
            peaks = {scale: peak_mb(stage, works[scale], args.batch) for scale in (1, 10)}
            ratios[stage] = peaks[10] / peaks[1]
            print(f"{stage:12s} peak RSS {peaks[1]:7.0f} MB at {args.size} images/shard, "
                  f"{peaks[10]:7.0f} MB at {10 * args.size}: ratio {ratios[stage]:.2f}", flush=True)
    decoded_mb = 10 * args.size * args.side ** 2 * 3 / 2**20
    print(f"(a whole 10x shard decoded would be {decoded_mb:.0f} MB of RGB pixels)")
    print(f"RESULT max_rss_ratio={max(ratios.values()):.2f}")


if __name__ == "__main__":
    main()
