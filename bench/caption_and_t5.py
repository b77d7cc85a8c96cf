"""Captioning throughput and the T5 cache's cost per sample, each against a baseline run side by side.

    .venv/bin/python bench/caption_and_t5.py [--images 64] [--batch 8] [--model PATH_OR_HUB]

1. Captioning (images/s): `lumos.caption.internvl.Captioner` batched (`--batch`) vs the same
   captioner one image at a time (the baseline), on the same images; same captions required.
2. T5 cache (s/sample): writing the cache (`extract_text_features`, both caption kinds) vs
   what training would pay without it (running T5 on a batch's captions every step), and
   reading cached embeddings back per sample.
The tiny profile's models are random and small: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from safetensors.torch import load_file

from lumos.caption.internvl import CaptionSettings, Captioner
from lumos.config import TextEncoder, load_profile
from lumos.data.text_features import extract_text_features
from lumos.encoders.t5 import T5TextEncoder


def images(n: int) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(96, 128, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--model", default=None, help="InternVL hub name or path (default: tiny random)")
    args = ap.parse_args()
    profile = load_profile()
    imgs = images(args.images)
    settings = dict(model=args.model, max_new_tokens=profile.captioner.max_new_tokens, precision="fp32")
    batched = Captioner(CaptionSettings(batch_size=args.batch, **settings))
    single = Captioner(CaptionSettings(batch_size=1, **settings))
    batched.caption(imgs[:2]), single.caption(imgs[:2])  # warm-up
    caps_b, t_b = timed(lambda: batched.caption(imgs))
    caps_s, t_s = timed(lambda: single.caption(imgs))
    print(f"captioning {args.images} images ({batched.model_id}, {settings['max_new_tokens']} new tokens)")
    print(f"  batch {args.batch:>3}: {args.images / t_b:8.2f} images/s")
    print(f"  batch   1: {args.images / t_s:8.2f} images/s   (baseline)")
    print(f"  batched / one-at-a-time: {t_s / t_b:.2f}x; same captions: {caps_b == caps_s}")

    t5 = T5TextEncoder.from_config(TextEncoder(pretrained=None, max_length=profile.text_encoder.max_length,
                                               precision="fp32"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        uids = [f"u{i:05d}" for i in range(len(caps_b))]
        pq.write_table(pa.table({"uid": uids, "key": uids, "shard": ["s.tar"] * len(uids),
                                 "raw_caption": ["a red circle at the top left"] * len(uids)}),
                       tmp / "subset.parquet")
        pq.write_table(pa.table({"uid": uids, "long_caption": caps_b}), tmp / "captions.parquet")
        _, t_write = timed(lambda: extract_text_features(
            tmp / "subset.parquet", tmp / "captions.parquet", tmp / "t5", t5, 64, "fp16", {"b": 1}))
        _, t_read = timed(lambda: load_file(str(next((tmp / "t5").glob("*.safetensors")))))
        _, t_online = timed(lambda: t5(caps_b))  # what a training step would pay per batch without the cache
    n = len(caps_b)
    print(f"T5 cache over {n} samples (both caption kinds, max_length {t5.max_length}, {t5.name})")
    print(f"  write cache : {1e3 * t_write / n:8.3f} ms/sample (one-off)")
    print(f"  read cache  : {1e3 * t_read / n:8.3f} ms/sample")
    print(f"  T5 on the fly (long captions only): {1e3 * t_online / n:8.3f} ms/sample")
    print(f"  cached read is {t_online / max(t_read, 1e-9):.1f}x cheaper than running T5 each time")


if __name__ == "__main__":
    main()
