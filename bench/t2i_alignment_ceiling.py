"""T2I strict alignment on held-out prompts vs. the ceiling its VAE allows (issue 15).

    python bench/t2i_alignment_ceiling.py [--n 48]

Run in a workspace after `train-t2i` (reads params.yaml, models/vae, models/t2i). Samples the
first ``n`` held-out COCO stand-in prompts (``n`` > ``eval.images.coco30k.samples`` draws more
scenes from the same held-out stream) at the last stage's side, and scores with
lumos/eval/alignment.py (the params' ``eval.alignment``): the samples, and the VAE's
reconstructions of the prompts' own rendered scenes, which bound what any sampler decoding
through that VAE can reach. Last line: `RESULT t2i_colour=<x> vae_colour=<y>`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lumos.config import load_profile
from lumos.data.extract import square_crop
from lumos.demo.heldout import COCO_SIDE, _stream
from lumos.demo.scenes import caption, render, sample_scene
from lumos.encoders import build_vae
from lumos.encoders.text import build_text_encoder
from lumos.eval.alignment import TAGS, alignment_scores
from lumos.sample.i2i import load_model
from lumos.sample.t2i import text_to_image
from lumos.tasks.priors import t2i_final


def _pil(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for x in images]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48)
    n = ap.parse_args().n
    p = load_profile()
    ckpt = t2i_final(Path("models/t2i"))
    if ckpt is None:
        raise SystemExit("no finished T2I checkpoint in models/t2i: run train-t2i first")
    model, _ = load_model(ckpt)
    vae, text = build_vae(p.vae), build_text_encoder(p.text_encoder)
    scenes = [sample_scene(_stream(p.mini_world.seed, "coco", i), COCO_SIDE, COCO_SIDE, p.mini_world.max_shapes)
              for i in range(n)]  # lumos/demo/heldout.py's COCO stand-in stream
    side, a = p.t2i.stages[-1].resolution, p.eval.alignment
    samples = torch.cat([text_to_image(model, vae, text, [caption(s) for s in scenes[i:i + 8]], side, side,
                                       p.diffusion, p.sample.seed + i) for i in range(0, n, 8)])
    with torch.no_grad():
        x = torch.stack([square_crop(side)(render(s)) for s in scenes]) * 2 - 1
        rebuilt = (vae.decode(vae.encode(x)[0]).clamp(-1, 1) + 1) / 2
    rows = {}
    for name, images in (("rendered scenes", (x + 1) / 2), ("VAE reconstructions", rebuilt), ("T2I samples", samples)):
        r = alignment_scores(_pil(images), [s.to_dict() for s in scenes], a.tolerance, a.min_fraction, a.cell_px)
        rows[name] = r
        print(f"{name:20s} " + "  ".join(f"{k} {r[k]:.3f}" for k in TAGS))
    print(f"RESULT t2i_colour={rows['T2I samples']['colour']:.3f} vae_colour={rows['VAE reconstructions']['colour']:.3f}")


if __name__ == "__main__":
    main()
