"""The generation inside `sample-*` as generation units (lumos/runtime/units.py): each unit
writes its own files (atomically, under the stage's output folder) and returns their names and
counts for the stage's manifest.

    sample-i2i   the variation grid, the interpolation strip (seed ``sample.seed`` each)
    sample-t2i   one aspect ratio: every prompt at that bucket (seed ``t2i.sample.seed``)
    sample-nvs   one GSO-protocol object: its novel views and strip (seed ``sample.seed``)
    sample-i2v   one clip from a prepared clip's first frame (seed ``sample.seed`` + clip index)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lumos.config import VAE, Diffusion, TextEncoder, VisionEncoder
from lumos.runtime.units import Result, UnitWorker


@dataclass(frozen=True)
class SampleUnit:
    index: int
    seed: int
    name: str  # what it draws: "variations", "interpolation", an aspect ratio, an object, a clip
    inputs: Any  # what it draws from (catalog rows, prompts and a size, an object, a first frame)
    stamp: str
    target: str | None = None


def _dit(ckpt: dict):
    from lumos.sample.i2i import load_model

    return load_model(ckpt["path"])[0]


def build_image(ckpt: dict, vae: VAE, vision: VisionEncoder) -> dict:
    """(DiT, VAE, vision encoder) of an image-conditioned task (I2I, NVS, I2V)."""
    from lumos.encoders import build_vae, build_vision_encoder

    return {"model": _dit(ckpt), "vae": build_vae(vae), "encoder": build_vision_encoder(vision)}


def build_decoder(ckpt: dict, vae: VAE) -> dict:
    """(DiT, VAE) of a task sampled from cached latents and tokens (NVS, I2V)."""
    from lumos.encoders import build_vae

    return {"model": _dit(ckpt), "vae": build_vae(vae)}


def build_t2i(ckpt: dict, vae: VAE, text: TextEncoder, device: str = "cpu") -> dict:
    from lumos.encoders import build_vae
    from lumos.encoders.text import build_text_encoder
    from lumos.runtime.device import resolve_device

    return {"model": _dit(ckpt), "vae": build_vae(vae), "text": build_text_encoder(text, resolve_device(device))}


def sample_units(worker_cls: type, build, out: Path, settings: dict, units: list[tuple[str, int, Any, Any]],
                 profile, precisions: dict | None = None) -> list[Result]:
    """Run a sample stage's units ``(name, seed, inputs, stamp parts)`` (in-process or on Ray as
    ``profile.ray`` says) writing under ``out``; results in unit order. A unit whose result is
    filed under ``out/.units`` with the same stamp (a crashed run's) is not drawn again; the
    folder goes once every unit is done."""
    from lumos.runtime.units import clear_results, run_units, stamp

    out = Path(out).resolve()
    folder = out / ".units"
    jobs = [SampleUnit(i, seed, name, inputs, key := stamp(settings, profile.diffusion.model_dump(), name, seed, parts),
                       str(folder / f"{key}.safetensors")) for i, (name, seed, inputs, parts) in enumerate(units)]
    worker = (build, str(out), settings, profile.diffusion, profile.device, precisions)
    results = run_units(worker_cls, worker, jobs, profile.ray, profile.device)
    clear_results(folder)
    return results


class SampleWorker(UnitWorker):
    def __init__(self, build, out: str, settings: dict, diffusion: Diffusion, device: str = "cpu",
                 precisions: dict | None = None) -> None:
        super().__init__(build, device, precisions)
        self.out, self.settings, self.diffusion = Path(out), settings, diffusion


class I2ISampleWorker(SampleWorker):
    """``settings``: images, variations, interpolation_steps, resolution."""

    def generate(self, unit: SampleUnit, m: dict) -> Result:
        from lumos.data.extract import load_images
        from lumos.sample.i2i import interpolation, save_grid, variations

        s = self.settings
        images = [im for shard, key, member in unit.inputs for im in load_images(shard, [(key, member)])]
        if unit.name == "variations":
            grid = variations(m["model"], m["vae"], m["encoder"], images[: s["images"]], s["variations"],
                              s["resolution"], self.diffusion, unit.seed)
            save_grid(grid.float().cpu(), self.out / "variations.png", per_row=s["variations"] + 1)
            return {"file": "variations.png"}
        strip = interpolation(m["model"], m["vae"], m["encoder"], images[0], images[1], s["interpolation_steps"],
                              s["resolution"], self.diffusion, unit.seed)
        save_grid(strip.float().cpu(), self.out / "interpolation.png", per_row=strip.shape[0])
        return {"file": "interpolation.png"}


class T2ISampleWorker(SampleWorker):
    """``unit.inputs``: (height, width, [{"key", "prompt"}, ...])."""

    def generate(self, unit: SampleUnit, m: dict) -> Result:
        from lumos.sample.i2i import save_grid, save_png
        from lumos.sample.t2i import text_to_image

        h, w, prompts = unit.inputs
        images = text_to_image(m["model"], m["vae"], m["text"], [p["prompt"] for p in prompts], h, w,
                               self.diffusion, unit.seed).float().cpu()
        save_grid(images, self.out / f"grid-{h}x{w}.png", per_row=len(prompts))
        for p, im in zip(prompts, images):
            save_png(im, self.out / "images" / f"{h}x{w}" / f"{p['key']}.png")
        return {"file": f"grid-{h}x{w}.png"}


class NVSSampleWorker(SampleWorker):
    """``unit.inputs``: (the object's feature file, its rendered views folder); ``settings``: azimuths."""

    def generate(self, unit: SampleUnit, m: dict) -> Result:
        from lumos.data.nvs import load_views
        from lumos.data.stream import load_shard
        from lumos.eval.foreground import foreground_iou
        from lumos.sample.i2i import save_grid, save_png
        from lumos.sample.nvs import novel_views

        features, views = unit.inputs
        tensors, _ = load_shard(features)  # a local file or a bucket URL (storage.features)
        mean, cond, w2c = (tensors[k] for k in ("latent_mean", "condition", "w2c"))
        device = next(m["model"].parameters()).device
        pred = novel_views(m["model"], m["vae"], mean[0].to(device), cond[0].to(device), w2c[0].to(device),
                           w2c.to(device), self.diffusion, unit.seed).float().cpu()
        truth, _ = load_views(views)
        uid, n_az = unit.name, self.settings["azimuths"]
        for i, img in enumerate(pred):
            save_png(img, self.out / uid / f"{i:03d}.png")
        strip = torch.cat([truth[:1], pred[:n_az], truth[:1], truth[:n_az]])
        save_grid(strip, self.out / f"strip-{uid}.png", per_row=n_az + 1)
        # does the view show the object? (issue 15): silhouette IoU vs the true render, input view aside
        iou = float(foreground_iou(pred[1:], truth[1:]).mean())
        return {"file": f"strip-{uid}.png", "views": len(pred), "foreground_iou": iou}


class I2VSampleWorker(SampleWorker):
    """``unit.inputs``: (first-frame latent (C,h,w), its tokens (M,d)); ``settings``: frames."""

    def generate(self, unit: SampleUnit, m: dict) -> Result:
        import numpy as np

        from lumos.io import atomic_write_bytes
        from lumos.sample.i2v import image_to_video_latents, write_clip

        first, cond = unit.inputs
        device = next(m["model"].parameters()).device
        z = image_to_video_latents(m["model"], first[None].to(device), cond[None].to(device),
                                   self.settings["frames"], self.diffusion, unit.seed,
                                   strength=self.settings.get("strength", 1.0))
        frames = ((m["vae"].decode(z[0]).float().clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(0, 2, 3, 1)
        frames = frames.cpu().numpy()
        key = unit.name
        write_clip(frames, self.out / f"{key}.mp4", self.out / f"{key}.gif")
        buf = io.BytesIO()
        np.save(buf, frames)
        atomic_write_bytes(self.out / f"{key}.npy", buf.getvalue())
        return {"files": [f"{key}.mp4", f"{key}.gif", f"{key}.npy"], "frames": int(frames.shape[0])}
