"""The `evaluate-*` stages: each task's samples measured against references, one JSON per task
under metrics/ (what `dvc metrics show` lists and `lumos report` lays out like the paper).

    metrics/i2i.json   FID/KID of I2I samples vs. the catalog images they were conditioned on
    metrics/t2i.json   FID/KID vs. the prompts' own images, CLIP score, mini-world alignment
    metrics/nvs.json   PSNR/SSIM/LPIPS per elevation on the GSO protocol (Table 4)
    metrics/i2v.json   FVD/KVD/PIC per video protocol (Table 5)

Each file also names the prior the task was trained from, so a `dvc exp` grid over
`prior` reads like Tables 4-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lumos.config import Profile
from lumos.curation.catalog import DEFAULT_CATALOG, query
from lumos.data.extract import load_images, square_crop
from lumos.eval.alignment import TAGS, alignment_scores
from lumos.eval.features import image_extractor, video_extractor
from lumos.eval.image_metrics import ClipScorer, clip_score, fid_kid, lpips_model, nvs_metrics
from lumos.eval.video_metrics import video_metrics
from lumos.io import atomic_write_text
from lumos.render.pairs import composite
from lumos.video.webvid import iter_samples

METRICS = Path("metrics")
MINI_WORLD_IMAGES = Path("datasets/mini-world/images")


def _write(path: Path, metrics: dict) -> dict:
    atomic_write_text(path, json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics


def _prior(models: Path) -> str | None:
    summary = models / "summary.json"
    return json.loads(summary.read_text()).get("prior") if summary.is_file() else None


def _kid_size(profile: Profile, n: int) -> int:
    return max(2, min(profile.eval.kid_subset_size, n))


def _images(profile: Profile) -> torch.nn.Module:
    e = profile.eval
    return image_extractor(e.inception_weights, e.feature_dim, e.feature_resolution, e.seed)


def _lpips(profile: Profile) -> torch.nn.Module:
    return lpips_model(profile.eval.lpips_net, profile.eval.lpips_backbone, profile.eval.seed)


def _read_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def run_evaluate_i2i(profile: Profile, models: Path = Path("models/i2i"), catalog: Path = DEFAULT_CATALOG,
                     out: Path = METRICS) -> dict:
    """One I2I sample per catalog image, conditioned on that image's tokens, vs. the images."""
    from lumos.encoders import build_vae, build_vision_encoder
    from lumos.sample.i2i import load_model, variations
    from lumos.train.loop import latest_checkpoint

    ckpt = latest_checkpoint(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished checkpoint in {models}: run train-i2i first")
    model, _ = load_model(ckpt)
    n = min(p.samples for p in profile.eval.images.values()) if profile.eval.images else 16
    rows = query(f"SELECT shard, key, member FROM images ORDER BY key LIMIT {n}", catalog).fetchall()
    images = [im for shard, key, member in rows for im in load_images(shard, [(key, member)])]
    res = profile.train.resolution
    grid = variations(model, build_vae(profile.vae), build_vision_encoder(profile.vision_encoder), images, 1, res,
                      profile.diffusion, profile.sample.seed)
    generated, reference = grid[1::2], grid[0::2]  # rows of [input, sample]
    m = fid_kid(generated, reference, _images(profile), kid_subsets=profile.eval.kid_subsets,
                kid_subset_size=_kid_size(profile, len(images)))
    return _write(out / "i2i.json", {"fid": m["fid"], "kid": m["kid"], "samples": len(images),
                                     "checkpoint": str(ckpt)})


def _scene_of(url: str) -> Path:
    return MINI_WORLD_IMAGES / (Path(url).stem + ".json")


def run_evaluate_t2i(profile: Profile, samples: Path = Path("samples/t2i"), catalog: Path = DEFAULT_CATALOG,
                     out: Path = METRICS) -> dict:
    manifest = json.loads((samples / "prompts.json").read_text())
    size = manifest["sizes"][0]  # the first aspect ratio (square by default): FID's protocol size
    folder = samples / "images" / f"{size['height']}x{size['width']}"
    prompts = manifest["prompts"]
    generated = torch.stack([_read_png(folder / f"{p['key']}.png") for p in prompts])
    urls = dict(query("SELECT uid, url FROM images", catalog).fetchall())
    rows = {u: (s, k, m) for u, s, k, m in query("SELECT uid, shard, key, member FROM images", catalog).fetchall()}
    prep = square_crop(generated.shape[-1])
    reference = torch.stack([(prep(load_images(rows[p["uid"]][0], [rows[p["uid"]][1:]])[0]) * 255).byte()
                             for p in prompts])
    m = fid_kid(generated, reference, _images(profile), kid_subsets=profile.eval.kid_subsets,
                kid_subset_size=_kid_size(profile, len(prompts)))
    clip = clip_score(generated, [p["prompt"] for p in prompts], ClipScorer(profile.eval.clip_model, profile.eval.seed))
    result = {"fid": m["fid"], "kid": m["kid"], "clip_score": clip["clip_score"], "samples": len(prompts),
              "prior": _prior(Path("models/t2i"))}
    scenes = [_scene_of(urls.get(p["uid"], "")) for p in prompts]
    if all(s.is_file() for s in scenes):  # mini-world prompts: exact alignment (beyond the paper)
        a = profile.eval.alignment
        al = alignment_scores([Image.fromarray(x.permute(1, 2, 0).numpy()) for x in generated],
                              [json.loads(s.read_text()) for s in scenes], a.tolerance, a.min_fraction, a.cell_px)
        result["alignment"] = {k: al[k] for k in TAGS}
    return _write(out / "t2i.json", result)


def run_evaluate_nvs(profile: Profile, samples: Path = Path("samples/nvs"),
                     renders: Path = Path("datasets/renders/gso"), out: Path = METRICS) -> dict:
    """Every GSO-protocol view but the input one, predicted vs. rendered, per elevation."""
    manifest = json.loads((samples / "manifest.json").read_text())
    preds, targets, elevations = [], [], []
    for obj in manifest["objects"]:
        cams = json.loads((renders / obj["uid"] / "cameras.json").read_text())["views"]
        for i, cam in enumerate(cams):
            if i == manifest["input_view"]:
                continue
            preds.append(_read_png(samples / obj["uid"] / f"{i:03d}.png"))
            rgba = np.asarray(Image.open(renders / obj["uid"] / cam["image"]).convert("RGBA"))
            targets.append(torch.from_numpy((composite(rgba) * 255).round().astype(np.uint8)).permute(2, 0, 1))
            elevations.append(cam["elevation_deg"])
    rows = nvs_metrics(torch.stack(preds), torch.stack(targets), elevations, _lpips(profile))
    return _write(out / "nvs.json", {**rows, "objects": len(manifest["objects"]), "prior": _prior(Path("models/nvs"))})


def run_evaluate_i2v(profile: Profile, samples: Path = Path("samples/i2v"),
                     clips: Path = Path("datasets/clips/webvid"), out: Path = METRICS) -> dict:
    """Generated clips vs. the clips whose first frames they started from (FVD/KVD), and each
    generated frame vs. that first frame (PIC)."""
    manifest = json.loads((samples / "manifest.json").read_text())
    keys = [c["key"] for c in manifest["clips"]]
    ref = {k: frames for k, frames, _ in iter_samples(clips) if k in set(keys)}
    gen = torch.from_numpy(np.stack([np.load(samples / f"{k}.npy") for k in keys])).permute(0, 1, 4, 2, 3)
    real = torch.from_numpy(np.stack([ref[k] for k in keys])).permute(0, 1, 4, 2, 3)
    e = profile.eval
    extractor = video_extractor(e.i3d_weights, e.feature_dim, profile.i2v.resolution, e.seed)
    m = video_metrics(gen, real, real[:, 0], extractor, _lpips(profile), kid_subsets=e.kid_subsets,
                      kid_subset_size=_kid_size(profile, len(keys)))
    protocol = next(iter(e.videos), "mini-world")
    return _write(out / "i2v.json", {protocol: {k: m[k] for k in ("fvd", "kvd", "pic")}, "clips": len(keys),
                                     "prior": _prior(Path("models/i2v"))})
