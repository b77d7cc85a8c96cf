"""I2V: does a generated clip keep its first frame's scene, and does it move? (issue 15)

    python bench/i2v_first_frame.py [--strengths 1.0 0.7 0.5 0.3]

Run in a workspace after `train-i2v` (reads params.yaml, models/i2v, datasets/features/i2v).
Runs the `sample-i2v` stage's own code (lumos/tasks/i2v_stages.py: run_sample) once per
``i2v.sample_strength`` into a scratch folder, side by side on the same clips, seeds and
checkpoint, and prints per strength the first-frame colour ratio (later frames' colour
distance to their own first frame / to other clips' first frames; ~1 = the scene is lost) and
the mean frame-to-frame change, each beside the real clips' (the cached clip latents decoded by
the same VAE). Strength 1.0 is the paper's sampler (every later frame from pure noise); below 1
the later frames start from frame 0's latent noised to ``strength`` x T (an SDEdit-style start).
Last line: `RESULT ratio_at_<s>=<x> ...` for every strength, then `real_ratio=<x>`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from lumos.config import load_profile
from lumos.tasks.i2v_stages import run_sample


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strengths", type=float, nargs="+", default=[1.0, 0.9, 0.7, 0.5, 0.3])
    strengths = ap.parse_args().strengths
    p = load_profile()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in strengths:
            profile = p.model_copy(update={"i2v": p.i2v.model_copy(update={"sample_strength": s})})
            m = run_sample(profile, out=Path(tmp) / f"strength-{s}")
            if "first_frame_colour" not in m:
                raise SystemExit("fewer than 2 clips sampled: raise i2v.sample_clips")
            results[s] = m
            print(f"strength {s:.2f}  first-frame colour ratio {m['first_frame_colour']['ratio']:.3f} "
                  f"(real {m['first_frame_colour_real']['ratio']:.3f})  motion {m['motion']['generated']:.3f} "
                  f"(real {m['motion']['real']:.3f})", flush=True)
    real = next(iter(results.values()))["first_frame_colour_real"]["ratio"]
    print("RESULT " + " ".join(f"ratio_at_{s:g}={m['first_frame_colour']['ratio']:.3f}" for s, m in results.items())
          + f" real_ratio={real:.3f}")


if __name__ == "__main__":
    main()
