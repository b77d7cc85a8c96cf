"""What the held-out evaluation (issue 17) costs in the tiny pipeline: evaluate-nvs (render +
generate + score 2 GSO-layout objects), evaluate-i2v (UCF-101/MSR-VTT clips streamed and
generated), evaluate-t2i (raw + long captions), and the eval.every probes' set-up and call.

    python bench/heldout_eval_cost.py      # RESULT lines, seconds on this machine

Checkpoints carry random weights of the tiny profile's shapes: the cost does not depend on them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from lumos.config import DEFAULT_PARAMS, load_params
from lumos.demo.heldout import build_heldout
from lumos.encoders import build_vae, build_vision_encoder
from lumos.encoders.t5 import T5TextEncoder
from lumos.models import ConditionedDiT, NVSDiT, VideoDiT, backbone_args


def checkpoint(root: Path, model_class: str, model: torch.nn.Module, args: dict) -> None:
    ckpt = root / "checkpoints" / "step-0000001"
    ckpt.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(ckpt / "model.safetensors"))
    save_file(state, str(ckpt / "ema.safetensors"))
    (ckpt / "config.json").write_text(json.dumps({"model_class": model_class, "model_args": args}))
    (ckpt / "DONE").write_text("1")


def shapes(profile, side: int) -> dict:
    x = torch.rand(1, 3, side, side)
    mean, _ = build_vae(profile.vae).encode(x * 2 - 1)
    cond = build_vision_encoder(profile.vision_encoder)(x)
    return {"variant": profile.model.variant, "latent_channels": mean.shape[1], "latent_size": mean.shape[-1],
            "condition_dim": cond.shape[-1], "condition_tokens": cond.shape[1], **backbone_args(profile.model)}


def main() -> None:
    from lumos.eval import stages
    from lumos.eval.probes import T2IProbes, i2i_probe

    p = load_params(DEFAULT_PARAMS).active
    base = Path(tempfile.mkdtemp(prefix="heldout-eval-cost-"))
    root = base / "mini-world" / "heldout"
    build_heldout(root, n=p.mini_world.heldout, seed=p.mini_world.seed)
    (base / "objects.json").write_text(json.dumps({"train-000": "train-000.glb"}))
    ev = p.eval.model_copy(update={
        "objects": {"gso": p.eval.objects["gso"].model_copy(update={"reference": str(root / "gso")})},
        "videos": {k: v.model_copy(update={"reference": str(root / k)}) for k, v in p.eval.videos.items()},
        "images": {"coco30k": p.eval.images["coco30k"].model_copy(update={
                       "reference": str(root / "coco/val2014"),
                       "prompts": str(root / "coco/annotations/captions_val2014.json")}),
                   "imagenet": p.eval.images["imagenet"].model_copy(update={"reference": str(root / "imagenet/val")})}})
    p = p.model_copy(update={"eval": ev, "nvs": p.nvs.model_copy(update={"objects": str(base / "objects.json")})})
    a = shapes(p, p.nvs.resolution)
    checkpoint(base / "models/nvs", "nvs", NVSDiT(**a), a)
    a = {**shapes(p, p.i2v.resolution), "max_frames": p.i2v.frames}
    checkpoint(base / "models/i2v", "video", VideoDiT(**a), a)
    text = T5TextEncoder.from_config(p.text_encoder)
    a = {**shapes(p, p.t2i.stages[-1].resolution), "condition_dim": text.width,
         "condition_tokens": p.text_encoder.max_length, "size_conditioning": p.t2i.stages[-1].multi_aspect}
    checkpoint(base / "models/t2i/stages/stage-0", "dit", ConditionedDiT(**a), a)
    runs = {"evaluate_nvs_s": lambda: stages.run_evaluate_nvs(p, base / "models/nvs", base / "renders", base / "metrics"),
            "evaluate_i2v_s": lambda: stages.run_evaluate_i2v(p, base / "models/i2v", base / "metrics"),
            "evaluate_t2i_s": lambda: stages.run_evaluate_t2i(p, base / "models/t2i", base / "metrics", base / "caps"),
            "probes_setup_s": lambda: (i2i_probe(p), [T2IProbes(p).at(s.resolution) for s in p.t2i.stages])}
    result = {}
    for name, run in runs.items():
        t = time.perf_counter()
        run()
        result[name] = time.perf_counter() - t
    print("RESULT " + " ".join(f"{k}={v:.1f}" for k, v in result.items()))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
