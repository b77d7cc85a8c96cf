"""The `evaluate-*` stages: each task's samples measured against references, one JSON per task
under metrics/ (what `dvc metrics show` lists and `lumos report` lays out like the paper).

    metrics/i2i.json   {"imagenet": ...}: FID/KID of I2I variations of held-out ImageNet val images,
                       and their colour-histogram distance to their input vs. to other inputs
    metrics/t2i.json   {"coco30k": ...}: FID/KID of samples of held-out COCO captions vs. their
                       images, CLIP score, strict mini-world alignment (stand-in only);
                       {"coco30k_long": ...}: the same with the captioner's long captions (Table 2 †)
    metrics/nvs.json   {"gso": ...}: PSNR/SSIM/LPIPS per elevation of held-out GSO objects at the GSO
                       cameras (Table 4), rendered into datasets/heldout-renders/gso
    metrics/i2v.json   {"ucf101": ..., "msrvtt": ...}: FVD/KVD/PIC of clips generated from the held-out
                       clips' first frames (Table 5)

References are read only from ``eval.images``/``eval.videos`` (lumos/eval/references.py):
held-out sets, the real benchmarks in the paper profile, the mini-world's stand-ins in the tiny
one; each metric sits under the benchmark read, with samples, protocol and ``stand_in``.
Each file also names the prior the task was trained from, so a `dvc exp` grid over
`prior` reads like Tables 4-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from lumos.config import Profile
from lumos.eval.colour import variation_distances
from lumos.eval.features import image_extractor
from lumos.eval.references import benchmark, coco_prompts, imagenet_val
from lumos.eval.image_metrics import lpips_model
from lumos.io import atomic_write_text

METRICS = Path("metrics")
HELDOUT_RENDERS = Path("datasets/heldout-renders")  # held-out objects at the GSO cameras
HELDOUT_CAPTIONS = Path("datasets/heldout-captions")  # the captioner's long captions of held-out images


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


def _protocol(profile: Profile, name: str):
    try:
        return profile.eval.images[name]
    except KeyError:
        raise KeyError(f"eval.images has no {name!r} protocol (the held-out reference to read)") from None


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def run_evaluate_i2i(profile: Profile, models: Path = Path("models/i2i"), out: Path = METRICS) -> dict:
    """Table 1: one I2I variation per held-out ImageNet val image, FID/KID vs. those images."""
    from lumos.eval.generation import generate_i2i
    from lumos.eval.image_metrics import frechet_kernel_distances
    from lumos.train.loop import latest_checkpoint

    ckpt = latest_checkpoint(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished checkpoint in {models}: run train-i2i first")
    proto = _protocol(profile, "imagenet")
    paths = imagenet_val(proto.reference, proto.samples)
    colours: dict = {}
    generated, reference = generate_i2i(profile, ckpt, paths, out, colours)  # generation units on Ray
    m = frechet_kernel_distances(generated, reference, profile.eval.kid_subsets, _kid_size(profile, len(paths)))
    entry = benchmark(proto.reference, len(paths), "Table 1: one variation per ImageNet val image, FID/KID",
                      fid=m["fid"], kid=m["kid"])
    # issue 15: does a variation keep its input's colours? ratio ~1: the condition is ignored
    entry["colour_histogram"] = variation_distances(colours["reference"], colours["generated"])
    return _write(out / "i2i.json", {"imagenet": entry, "checkpoint": str(ckpt)})


@torch.no_grad()
def _reconstruction_alignment(profile: Profile, paths: list[str], side: int, scenes: list[dict]) -> dict:
    """Strict alignment of ``vae.decode(vae.encode(image))`` of the prompts' own images, 8 at a
    time: the ceiling of any sampler that decodes through this VAE."""
    from lumos.data.extract import square_crop
    from lumos.encoders import build_vae
    from lumos.eval.alignment import TAGS, alignment_scores

    vae, prep, a, rebuilt = build_vae(profile.vae), square_crop(side), profile.eval.alignment, []
    for i in range(0, len(paths), 8):
        batch = torch.stack([prep(_load_rgb(Path(p))) * 2 - 1 for p in paths[i:i + 8]])
        mean, _ = vae.encode(batch)
        pixels = ((vae.decode(mean).float().clamp(-1, 1) + 1) * 127.5).round().byte()
        rebuilt += [Image.fromarray(x) for x in pixels.permute(0, 2, 3, 1).cpu().numpy()]
    al = alignment_scores(rebuilt, scenes, a.tolerance, a.min_fraction, a.cell_px)
    return {k: al[k] for k in TAGS}


def run_evaluate_t2i(profile: Profile, models: Path = Path("models/t2i"), out: Path = METRICS,
                     captions_cache: Path = HELDOUT_CAPTIONS) -> dict:
    """Table 2 (FID-30K protocol) and Table 3 (alignment): held-out COCO captions -> samples at
    the last stage's square resolution, FID/KID vs. the captions' own images, CLIP score, and
    the strict mini-world alignment when the captions come with scene parameters. Table 2 †:
    the same images' long captions by the captioner (lumos/eval/long_captions.py) as prompts."""
    from lumos.caption.stages import build_captioner
    from lumos.eval.generation import generate_t2i
    from lumos.eval.image_metrics import frechet_kernel_distances
    from lumos.eval.long_captions import long_captions
    from lumos.tasks.priors import t2i_final

    ckpt = t2i_final(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished T2I checkpoint in {models}: run train-t2i first")
    proto = _protocol(profile, "coco30k")
    if proto.prompts is None:
        raise ValueError("eval.images.coco30k.prompts must name the COCO captions_val2014.json")
    prompts = coco_prompts(proto.prompts, proto.reference, proto.samples)
    side = profile.t2i.stages[-1].resolution
    kid = _kid_size(profile, len(prompts))
    scenes = [p["scene"] for p in prompts] if all(p["scene"] for p in prompts) else None  # Table 3 (stand-in)
    raw = generate_t2i(profile, ckpt, [p["prompt"] for p in prompts], side, out, "raw",  # units on Ray
                       [p["path"] for p in prompts], scenes)
    m = frechet_kernel_distances(raw["generated"], raw["reference"], profile.eval.kid_subsets, kid)
    entry = benchmark(proto.reference, len(prompts), "Table 2: FID-30K protocol, first caption per COCO val image",
                      fid=m["fid"], kid=m["kid"], clip_score=raw["clip_score"])
    if scenes is not None:  # the stand-in's scenes: Table 3's strict alignment
        entry["alignment"] = raw["alignment"]
        # the ceiling of any sampler decoding through this VAE: the same tags on the VAE's
        # reconstructions of the prompts' own images (issue 15: the tiny VAE's is near 0)
        entry["alignment_vae_reconstruction"] = _reconstruction_alignment(profile, [p["path"] for p in prompts], side, scenes)
    captioner = build_captioner(profile)
    longs = long_captions(prompts, captioner, captions_cache / "coco30k.json")
    long = generate_t2i(profile, ckpt, longs, side, out, "long")
    m = frechet_kernel_distances(long["generated"], raw["reference"], profile.eval.kid_subsets, kid)
    long_entry = benchmark(proto.reference, len(prompts),
                           f"Table 2 (long captions): the same COCO val images captioned by {captioner.model_id} "
                           f"({profile.captioner.prompt!r}), FID-30K protocol",
                           fid=m["fid"], kid=m["kid"], clip_score=long["clip_score"])
    return _write(out / "t2i.json", {"coco30k": entry, "coco30k_long": long_entry, "prior": _prior(models),
                                     "checkpoint": str(ckpt)})


def _object_protocol(profile: Profile, name: str):
    try:
        return profile.eval.objects[name]
    except KeyError:
        raise KeyError(f"eval.objects has no {name!r} protocol (the held-out objects to read)") from None


def _video_protocol(profile: Profile, name: str):
    try:
        return profile.eval.videos[name]
    except KeyError:
        raise KeyError(f"eval.videos has no {name!r} protocol (the held-out clips to read)") from None


def run_evaluate_nvs(profile: Profile, models: Path = Path("models/nvs"), renders: Path = HELDOUT_RENDERS,
                     out: Path = METRICS) -> dict:
    """Table 4: held-out GSO objects (never an Objaverse training object) rendered at the GSO
    cameras through render-objaverse's renderer, each predicted from its condition view."""
    from lumos.eval.generation import generate_nvs
    from lumos.eval.nvs_heldout import check_not_training, gso_objects, render_heldout
    from lumos.render.stages import read_object_list, renderer_for
    from lumos.train.loop import latest_checkpoint

    ckpt = latest_checkpoint(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished NVS checkpoint in {models}: run train-nvs first")
    proto = _object_protocol(profile, "gso")
    objects = gso_objects(proto.reference, proto.samples)
    check_not_training(list(objects), list(read_object_list(profile.nvs.objects)))
    rendered = render_heldout(objects, renders / "gso", profile.nvs, renderer_for(profile.nvs))
    rows = generate_nvs(profile, ckpt, rendered, out)  # one generation unit per object, on Ray
    n_az, elev = profile.nvs.eval_azimuths, profile.nvs.eval_elevations_deg
    entry = benchmark(proto.reference, len(objects),
                      f"Table 4: {n_az} azimuths x elevations {elev}, condition view azimuth 0 at {elev[0]:g} deg, "
                      f"PSNR/SSIM/LPIPS per elevation over the other views", **rows)
    entry["objects"] = list(objects)
    return _write(out / "nvs.json", {"gso": entry, "prior": _prior(models), "checkpoint": str(ckpt)})


def run_evaluate_i2v(profile: Profile, models: Path = Path("models/i2v"), out: Path = METRICS) -> dict:
    """Table 5: each held-out UCF-101 / MSR-VTT clip's first frame -> a clip; FVD/KVD vs. the
    held-out clips, PIC vs. the first frame. Clips are streamed (lumos/eval/i2v_heldout.py)."""
    from lumos.eval.generation import generate_i2v
    from lumos.eval.i2v_heldout import heldout_rows
    from lumos.train.loop import latest_checkpoint

    ckpt = latest_checkpoint(models)
    if ckpt is None:
        raise FileNotFoundError(f"no finished I2V checkpoint in {models}: run train-i2v first")
    if not profile.eval.videos:
        raise ValueError("eval.videos names no held-out video benchmark (ucf101, msrvtt)")
    e, result = profile.eval, {"prior": _prior(models), "checkpoint": str(ckpt)}
    for name, proto in e.videos.items():  # one generation unit per clip, on Ray
        m = generate_i2v(profile, ckpt, name, heldout_rows(name, Path(proto.reference).resolve()), proto, out)
        result[name] = benchmark(proto.reference, len(m["keys"]),
                                 f"Table 5, zero-shot: first frame of each clip -> {proto.frames} frames at an "
                                 f"interval of {proto.frame_interval}, {proto.resolution} px; FVD/KVD vs. the clips, "
                                 f"PIC (1 - LPIPS) vs. the first frame",
                                 fvd=m["fvd"], kvd=m["kvd"], pic=m["pic"], skipped=m["skipped"])
    return _write(out / "i2v.json", result)
