"""Parameter counts of the named ConditionedDiT variants in the paper's I2I setting.

Every variant of ``lumos.models.dit.VARIANTS`` is built on the ``meta`` device (shapes only, no
memory, no init time) for the paper's geometry: SD-VAE latents 4 x 32 x 32 (256 px images),
DINO-B condition width 768, one [CLS] token. ``parameter_count`` counts every parameter: the
PixArt transformer (patch embedding, adaLN-single, caption projection, blocks, final layer) and
the learned null condition. The paper trains Lumos-I2I with DiT-XL/2 (4.1); check: XL/2 has
0.6-0.8 B parameters. (DiT-XL/2 is 675 M; PixArt's adaLN-single drops the per-block adaLN MLPs,
28 x 1152 x 6912 = ~223 M, and cross-attention adds 28 x 4 x 1152^2 = ~149 M.)

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
    args = ap.parse_args()

    from lumos.models.dit import VARIANTS, ConditionedDiT, parameter_count

    print(f"latent {args.latent_channels}x{args.latent_size}x{args.latent_size}, "
          f"condition {args.tokens} x {args.condition_dim}\n")
    print(f"{'variant':8} {'layers':>6} {'width':>6} {'heads':>5} {'parameters':>14} {'M':>9}")
    counts = {}
    for name, spec in VARIANTS.items():
        with torch.device("meta"):
            model = ConditionedDiT(name, args.latent_channels, args.latent_size, args.condition_dim,
                                   args.tokens)
        counts[name] = n = parameter_count(model)
        width = spec["num_attention_heads"] * spec["attention_head_dim"]
        print(f"{name:8} {spec['num_layers']:6} {width:6} {spec['num_attention_heads']:5} {n:14,} "
              f"{n / 1e6:9.1f}")
    xl = counts["XL/2"] / 1e9
    print(f"\nXL/2 = {xl:.3f} B parameters (target 0.6-0.8 B: {'met' if 0.6 <= xl <= 0.8 else 'not met'})")


if __name__ == "__main__":
    main()
