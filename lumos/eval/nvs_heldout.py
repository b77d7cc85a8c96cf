"""Table 4 on held-out objects: Google Scanned Objects' per-object folders -> the GSO cameras
(16 azimuths x elevations 0 and 30 deg) -> Lumos-NVS from the condition view -> PSNR/SSIM/LPIPS
per elevation.

    gso_objects(folder, n)                    the first ``n`` ``<name>/meshes/model.obj`` by name
    check_not_training(names, training_uids)  ValueError if an evaluated object is a training one
    render_heldout(objects, out, nvs)         every object at the GSO cameras, through the same
                                              renderer interface as render-objaverse (cached)
    evaluate_objects(model, vae, encoder, rendered, ...) -> per-elevation rows

The condition view is camera 0 (azimuth 0, the first elevation); every other camera is a
target. Objects are evaluated one at a time, so memory holds one object's views; only per-view
scores are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lumos.config import NVS, Diffusion
from lumos.data.nvs import load_views
from lumos.eval.image_metrics import lpips, psnr, ssim
from lumos.render.cameras import fixed_cameras
from lumos.render.renderer import render_object

GSO_MESH = Path("meshes") / "model.obj"
INPUT_VIEW = 0  # azimuth 0 at the first elevation conditions the object


def gso_objects(folder: str | Path, n: int) -> dict[str, Path]:
    """``{name: mesh}`` of the first ``n`` objects (sorted by folder name) in GSO's layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no GSO folder at {folder}")
    found = {p.name: p / GSO_MESH for p in sorted(folder.iterdir()) if (p / GSO_MESH).is_file()}
    if not found:
        raise ValueError(f"{folder} holds no <object>/{GSO_MESH} folders (Google Scanned Objects' layout)")
    return dict(list(found.items())[:n])


def check_not_training(names: Sequence[str], training_uids: Sequence[str]) -> None:
    """No Objaverse training object may be evaluated (Table 4 is zero-shot on GSO)."""
    seen = sorted(set(names) & set(training_uids))
    if seen:
        raise ValueError(f"held-out NVS objects are training objects too: {seen[:5]}")


def render_heldout(objects: dict[str, Path], out: Path, nvs: NVS, renderer) -> dict[str, Path]:
    """Each object at the GSO cameras into ``out/<name>/`` (a finished object is skipped)."""
    cams = fixed_cameras(nvs.eval_azimuths, nvs.eval_elevations_deg, nvs.eval_radius)
    return {name: render_object(mesh, out, cams, nvs.resolution, renderer, nvs.fov_deg, uid=name)
            for name, mesh in objects.items()}


@torch.no_grad()
def predict_object(model: nn.Module, vae, encoder, obj_dir: Path, settings: Diffusion, seed: int,
                   ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """(predicted, true) target views (N,3,R,R) in [0, 1] and their elevations."""
    from lumos.sample.nvs import novel_views

    views, meta = load_views(obj_dir)
    w2c = torch.tensor([v["w2c"] for v in meta["views"]], dtype=torch.float32)
    device = next(model.parameters()).device  # the worker's device (lumos/runtime/units.py)
    x = views[INPUT_VIEW:INPUT_VIEW + 1].float().to(device)
    mean, _ = vae.encode(x * 2 - 1)
    tokens = encoder(x).float()
    targets = [i for i in range(len(views)) if i != INPUT_VIEW]
    pred = novel_views(model, vae, mean[0].float(), tokens[0], w2c[INPUT_VIEW].to(device), w2c[targets].to(device),
                       settings, seed).float().cpu()
    return pred, views[targets], [float(meta["views"][i]["elevation_deg"]) for i in targets]


def score_object(model: nn.Module, vae, encoder, obj_dir: Path, settings: Diffusion, seed: int,
                 lpips_net: nn.Module) -> dict[str, list[float]]:
    """One object's target views (a generation unit): ``elevation`` and ``psnr``/``ssim``/``lpips`` per view."""
    pred, true, elevations = predict_object(model, vae, encoder, obj_dir, settings, seed)
    per = {"psnr": psnr(pred, true), "ssim": ssim(pred, true), "lpips": lpips(pred, true, lpips_net)}
    return {"elevation": elevations} | {k: [float(x) for x in v] for k, v in per.items()}


def merge_object_scores(objects: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Objects' per-view scores (in object order) -> ``{"elevation_0": {"psnr", "ssim", "lpips", "views"}, ...}``."""
    scores: dict[float, dict[str, list[float]]] = {}
    for obj in objects:
        for j, e in enumerate(obj["elevation"]):
            row = scores.setdefault(e, {k: [] for k in ("psnr", "ssim", "lpips")})
            for k, v in row.items():
                v.append(obj[k][j])
    return {f"elevation_{e:g}": {k: sum(v) / len(v) for k, v in row.items()} | {"views": len(row["psnr"])}
            for e, row in sorted(scores.items())}


def evaluate_objects(model: nn.Module, vae, encoder, rendered: dict[str, Path], settings: Diffusion,
                     seed: int, lpips_net: nn.Module) -> dict[str, dict[str, float]]:
    """``{"elevation_0": {"psnr", "ssim", "lpips", "views"}, ...}`` over every object's targets,
    in this process (evaluate-nvs runs the same objects as generation units)."""
    return merge_object_scores([score_object(model, vae, encoder, obj_dir, settings, seed, lpips_net)
                                for obj_dir in rendered.values()])
