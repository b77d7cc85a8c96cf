"""Parameter counts of the named ConditionedDiT variants of both backbones in the paper's I2I
setting.

Every variant of ``lumos.models.dit.VARIANTS`` is built on the ``meta`` device (shapes only, no
memory, no init time) for each backbone and the paper's geometry: SD-VAE latents 4 x 32 x 32
(256 px images), DINO-B condition width 768, one [CLS] token, learned variance (8 output
channels, as released). ``parameter_count`` counts every parameter. The paper trains Lumos-I2I
with DiT-XL/2 (4.1; Table 3: Lumos-T2I 0.8 B). ``lumos`` (the released per-block adaLN-Zero DiT)
is DiT-XL/2 (675 M) plus cross-attention (28 x 4 x 1152^2 = ~149 M): ~0.82 B. ``pixart``
(adaLN-single) drops the per-block adaLN MLPs (28 x 1152 x 6912 = ~223 M): ~0.61 B.

    .venv/bin/python bench/model_sizes.py
    .venv/bin/python bench/model_sizes.py --latent-size 64 --condition-dim 1024 --tokens 120
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent-channels", type=int, default=4)
    ap.add_argument("--latent-size", type=int, default=32)
    ap.add_argument("--condition-dim", type=int, default=768)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--no-sigma", action="store_true", help="epsilon-only output (4 channels)")
    args = ap.parse_args()

    from lumos.models.dit import BACKBONES, VARIANTS, ConditionedDiT, parameter_count

    print(f"latent {args.latent_channels}x{args.latent_size}x{args.latent_size}, "
          f"condition {args.tokens} x {args.condition_dim}, learned variance: {not args.no_sigma}\n")
    print(f"{'backbone':8} {'variant':8} {'layers':>6} {'width':>6} {'heads':>5} {'parameters':>14} {'M':>9}")
    counts = {}
    for backbone in BACKBONES:
        for name, spec in VARIANTS.items():
            with torch.device("meta"):
                model = ConditionedDiT(name, args.latent_channels, args.latent_size, args.condition_dim,
                                       args.tokens, backbone=backbone, learn_sigma=not args.no_sigma)
            counts[backbone, name] = n = parameter_count(model)
            width = spec["num_attention_heads"] * spec["attention_head_dim"]
            print(f"{backbone:8} {name:8} {spec['num_layers']:6} {width:6} {spec['num_attention_heads']:5} "
                  f"{n:14,} {n / 1e6:9.1f}")
    for backbone in BACKBONES:
        xl = counts[backbone, "XL/2"] / 1e9
        print(f"RESULT {backbone} XL/2 = {xl:.3f} B parameters")
    xl = counts["lumos", "XL/2"] / 1e9
    print(f"lumos XL/2 vs Table 3's 0.8 B: {'met' if 0.75 <= xl <= 0.85 else 'not met'}")


if __name__ == "__main__":
    main()
