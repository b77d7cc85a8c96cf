"""The generation inside `evaluate-*` as generation units (lumos/runtime/units.py): each unit
generates and measures a bounded piece of a protocol on a Ray worker or in the stage's process,
and returns only what the metrics need (features, per-item scores); the stage merges them in
unit order, so the metrics are those of one process.

    evaluate-i2i   a batch of ``eval.batch_size`` ImageNet val images, noise from seed + batch
    evaluate-t2i   ``eval.batch_size`` COCO prompts, generated 8 at a time from seed + offset
                   (offset: the prompt's position in the protocol); raw and long-caption passes
    evaluate-nvs   one held-out object (every GSO camera but the condition view), seed fixed
    evaluate-i2v   one held-out clip, noise from seed + its rank among decodable clips

Workers build the checkpoint's DiT, the VAE and encoders (``features.precision``), the text
encoder (``text_encoder.precision``) and the metric models once, on ``device``. The stages call

    generate_i2i(profile, ckpt, paths, out, colours)          -> (generated, reference) features
    generate_t2i(profile, ckpt, prompts, side, out, name, references, scenes) -> merge_t2i's dict
    generate_nvs(profile, ckpt, rendered, out)                -> per-elevation rows
    generate_i2v(profile, ckpt, name, rows, protocol, out)    -> FVD/KVD/PIC

which file unit results under ``out/.units/<task>`` while they run (a crashed run resumes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lumos.config import VAE, Diffusion, Eval, Profile, TextEncoder, VideoProtocol, VisionEncoder
from lumos.runtime.units import OnDevice, Result, UnitWorker
from lumos.video.webvid import VideoRow

T2I_SUB_BATCH = 8  # prompts generated at once, each sub-batch from seed + its offset (as before units)


def _dit(ckpt: dict):
    """``ckpt``: :func:`lumos.runtime.units.checkpoint_id`, so a retrained checkpoint at the same
    path is a new worker (its models rebuilt), in a Ray host or in this process."""
    from lumos.sample.i2i import load_model

    return load_model(ckpt["path"])[0]


def _image_models(ckpt: dict, vae: VAE, vision: VisionEncoder) -> dict:
    from lumos.encoders import build_vae, build_vision_encoder

    return {"model": _dit(ckpt), "vae": build_vae(vae), "encoder": build_vision_encoder(vision)}


def _feature_extractor(e: Eval) -> torch.nn.Module:
    from lumos.eval.features import image_extractor

    return OnDevice(image_extractor(e.inception_weights, e.feature_dim, e.feature_resolution, e.seed))


def _lpips(e: Eval) -> torch.nn.Module:
    from lumos.eval.image_metrics import lpips_model

    return OnDevice(lpips_model(e.lpips_net, e.lpips_backbone, e.seed))


# --------------------------------------------------------------------------- evaluate-i2i
def build_i2i(ckpt: dict, vae: VAE, vision: VisionEncoder, e: Eval) -> dict:
    return _image_models(ckpt, vae, vision) | {"extractor": _feature_extractor(e)}


@dataclass(frozen=True)
class ImageBatch:
    index: int
    seed: int
    paths: tuple[str, ...]
    stamp: str
    target: str | None = None


class I2IEvalWorker(UnitWorker):
    def __init__(self, build, resolution: int, diffusion: Diffusion, batch_size: int, device: str = "cpu",
                 precisions: dict | None = None) -> None:
        super().__init__(build, device, precisions)
        self.resolution, self.diffusion, self.batch_size = resolution, diffusion, batch_size

    def generate(self, unit: ImageBatch, m: dict) -> Result:
        from lumos.eval.batched import i2i_batch_features

        return i2i_batch_features(m["model"], m["vae"], m["encoder"], m["extractor"], unit.paths, self.resolution,
                                  self.diffusion, unit.seed, self.batch_size)


# --------------------------------------------------------------------------- evaluate-t2i
def build_t2i(ckpt: dict, vae: VAE, text: TextEncoder, e: Eval, device: str = "cpu") -> dict:
    from lumos.encoders import build_vae
    from lumos.encoders.text import build_text_encoder
    from lumos.eval.image_metrics import ClipScorer
    from lumos.runtime.device import resolve_device

    return {"model": _dit(ckpt), "vae": build_vae(vae), "text": build_text_encoder(text, resolve_device(device)),
            "extractor": _feature_extractor(e), "scorer": ClipScorer(e.clip_model, e.seed)}


@dataclass(frozen=True)
class PromptBatch:
    index: int
    seed: int  # the protocol's seed: sub-batch j draws from seed + start + j
    start: int  # the first prompt's position in the protocol
    prompts: tuple[str, ...]
    stamp: str
    references: tuple[str, ...] | None = None  # the prompts' own images (None: features not needed again)
    scenes: tuple[dict, ...] | None = None  # the stand-in's scene parameters: strict alignment (Table 3)
    target: str | None = None


class T2IEvalWorker(UnitWorker):
    """Samples ``unit.prompts`` at ``side`` square; returns their features, CLIP cosines, and
    (when given) the reference images' features and each sample's alignment tags."""

    def __init__(self, build, side: int, diffusion: Diffusion, alignment: dict, device: str = "cpu",
                 precisions: dict | None = None) -> None:
        super().__init__(build, device, precisions)
        self.side, self.diffusion, self.alignment = side, diffusion, alignment

    def generate(self, unit: PromptBatch, m: dict) -> Result:
        from PIL import Image

        from lumos.data.extract import square_crop
        from lumos.eval.alignment import TAGS, alignment_score
        from lumos.eval.features import extract_features
        from lumos.sample.t2i import text_to_image

        prompts = list(unit.prompts)
        images = torch.cat([  # as evaluate-t2i always did: 8 prompts at once, from seed + offset
            (text_to_image(m["model"], m["vae"], m["text"], prompts[j:j + T2I_SUB_BATCH], self.side, self.side,
                           self.diffusion, unit.seed + unit.start + j).float().cpu() * 255).round().byte()
            for j in range(0, len(prompts), T2I_SUB_BATCH)])
        out: Result = {"generated": extract_features(images, m["extractor"], 64),
                       "cosine": torch.cat([m["scorer"].cosine(images[i:i + 32], prompts[i:i + 32])
                                            for i in range(0, len(prompts), 32)])}
        if unit.references is not None:
            prep = square_crop(self.side)
            ref = torch.stack([(prep(_load_rgb(p)) * 255).byte() for p in unit.references])
            out["reference"] = extract_features(ref, m["extractor"], 64)
        if unit.scenes is not None:
            per = [alignment_score(Image.fromarray(x.permute(1, 2, 0).numpy()), sc, **self.alignment)
                   for x, sc in zip(images, unit.scenes)]
            out["alignment"] = [{k: p[k] for k in TAGS} for p in per]
        return out


def _load_rgb(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def merge_t2i(results: list[Result]) -> dict:
    """Prompt batches' results (in order) -> features, CLIP score and alignment means as one pass
    over every prompt computes them (image_metrics.clip_score, alignment.alignment_scores)."""
    import numpy as np

    from lumos.eval.alignment import TAGS

    cos = torch.cat([r["cosine"] for r in results])
    merged = {"generated": torch.cat([r["generated"] for r in results]),
              "clip_score": float((100.0 * cos.clamp(min=0)).mean())}
    if all("reference" in r for r in results):
        merged["reference"] = torch.cat([r["reference"] for r in results])
    if all("alignment" in r for r in results):
        per = [a for r in results for a in r["alignment"]]
        merged["alignment"] = {k: float(np.mean([p[k] for p in per])) for k in TAGS}
    return merged


# --------------------------------------------------------------------------- evaluate-nvs
def build_nvs(ckpt: dict, vae: VAE, vision: VisionEncoder, e: Eval) -> dict:
    return _image_models(ckpt, vae, vision) | {"lpips": _lpips(e)}


@dataclass(frozen=True)
class ObjectUnit:
    index: int
    seed: int
    obj_dir: str  # rendered at the GSO cameras (cameras.json and views)
    stamp: str
    target: str | None = None


class NVSEvalWorker(UnitWorker):
    def __init__(self, build, diffusion: Diffusion, device: str = "cpu", precisions: dict | None = None) -> None:
        super().__init__(build, device, precisions)
        self.diffusion = diffusion

    def generate(self, unit: ObjectUnit, m: dict) -> Result:
        from lumos.eval.nvs_heldout import score_object

        return score_object(m["model"], m["vae"], m["encoder"], Path(unit.obj_dir), self.diffusion, unit.seed,
                            m["lpips"])


# --------------------------------------------------------------------------- evaluate-i2v
def build_i2v(ckpt: dict, vae: VAE, vision: VisionEncoder, e: Eval) -> dict:
    return _image_models(ckpt, vae, vision) | {"lpips": _lpips(e), "eval": e}


@dataclass(frozen=True)
class ClipUnit:
    index: int
    seed: int
    row: VideoRow
    protocol: VideoProtocol
    stamp: str
    target: str | None = None


class I2VEvalWorker(UnitWorker):
    """First frame of ``unit.row`` -> a clip at the model's ``side`` -> FVD features and PIC."""

    def __init__(self, build, side: int, diffusion: Diffusion, device: str = "cpu",
                 precisions: dict | None = None, strength: float = 1.0) -> None:
        super().__init__(build, device, precisions)
        self.side, self.diffusion, self.strength, self.extractors = side, diffusion, strength, {}

    def _extractor(self, m: dict, resolution: int) -> torch.nn.Module:
        from lumos.eval.features import video_extractor
        from lumos.runtime.device import place

        if resolution not in self.extractors:  # one per protocol resolution (ucf101, msrvtt)
            e = m["eval"]
            self.extractors[resolution] = place(OnDevice(video_extractor(e.i3d_weights, e.feature_dim, resolution,
                                                                         e.seed)), self.device)
        return self.extractors[resolution]

    def generate(self, unit: ClipUnit, m: dict) -> Result:
        from lumos.eval.i2v_heldout import score_clip
        from lumos.sample.i2v import image_to_video_latents

        model, vae, encoder = m["model"], m["vae"], m["encoder"]
        device = next(model.parameters()).device

        def generate(first: torch.Tensor, frames: int, seed: int) -> torch.Tensor:
            x = torch.nn.functional.interpolate(first[None], size=self.side, mode="bilinear",
                                                antialias=True).clamp(0, 1).to(device)
            mean, _ = vae.encode(x * 2 - 1)
            z = image_to_video_latents(model, mean.float(), encoder(x).float(), frames, self.diffusion, seed,
                                       strength=self.strength)
            return (vae.decode(z[0]).float().clamp(-1, 1) + 1) / 2

        return score_clip(unit.row, unit.protocol, generate, self._extractor(m, unit.protocol.resolution), m["lpips"],
                          unit.seed)


# --------------------------------------------------------------------------- the stages' calls
def _units(out: Path, task: str) -> Path:
    """Where a stage's generation units file their results (a rerun after a crash resumes);
    removed once the metrics are written."""
    return (out / ".units" / task).resolve()


def _fingerprint(profile: Profile, ckpt: Path, *sections: str) -> tuple[dict, list]:
    """The checkpoint's identity, and what a unit's result depends on besides its own inputs."""
    from lumos.runtime.units import checkpoint_id

    cid = checkpoint_id(ckpt)
    vae = checkpoint_id(profile.vae.pretrained) if profile.vae.pretrained else None  # train-vae's output
    return cid, [cid, vae, profile.diffusion.model_dump(), profile.eval.model_dump()] + [
        getattr(profile, s).model_dump() for s in sections]


def generate_i2i(profile: Profile, ckpt: Path, paths: list, out: Path, colours: dict):
    """Table 1's batches as generation units: (generated, reference) features."""
    from functools import partial

    from lumos.eval.batched import i2i_batches, merge_i2i
    from lumos.runtime.units import clear_results, run_units, stamp

    e, folder = profile.eval, _units(out, "i2i")
    cid, fp = _fingerprint(profile, ckpt, "vae", "vision_encoder", "train")
    units = [ImageBatch(b, seed, tuple(str(Path(p).resolve()) for p in batch), stamp(fp, seed, [str(p) for p in batch]),
                        str(folder / f"{b:06d}.safetensors"))
             for b, batch, seed in i2i_batches(paths, e.batch_size, profile.sample.seed)]
    build = partial(build_i2i, cid, profile.vae, profile.vision_encoder, e)
    precisions = {"vae": profile.features.precision, "encoder": profile.features.precision}
    results = run_units(I2IEvalWorker, (build, profile.train.resolution, profile.diffusion, e.batch_size,
                                        profile.device, precisions), units, profile.ray, profile.device)
    merged = merge_i2i(results, colours)
    clear_results(folder)
    return merged


def generate_t2i(profile: Profile, ckpt: Path, prompts: list[str], side: int, out: Path, name: str,
                 references: list[str] | None = None, scenes: list | None = None) -> dict:
    """Samples of ``prompts`` as generation units of ``eval.batch_size`` prompts:
    their features, CLIP score, and when given the references' features and strict alignment."""
    from functools import partial

    from lumos.runtime.units import clear_results, run_units, stamp

    e, folder, seed = profile.eval, _units(out, f"t2i-{name}"), profile.sample.seed
    cid, fp = _fingerprint(profile, ckpt, "vae", "text_encoder")
    units = []
    for b, start in enumerate(range(0, len(prompts), e.batch_size)):
        end = start + e.batch_size
        refs = tuple(str(Path(r).resolve()) for r in references[start:end]) if references is not None else None
        sc = tuple(scenes[start:end]) if scenes is not None else None
        units.append(PromptBatch(b, seed, start, tuple(prompts[start:end]), stamp(fp, seed, start, prompts[start:end], refs, sc),
                                 refs, sc, str(folder / f"{b:06d}.safetensors")))
    build = partial(build_t2i, cid, profile.vae, profile.text_encoder, e, profile.device)
    precisions = {"vae": profile.features.precision, "text": None}  # text_encoder.precision: applied when built
    a = e.alignment
    worker = (build, side, profile.diffusion, {"tolerance": a.tolerance, "min_fraction": a.min_fraction,
                                               "cell_px": a.cell_px}, profile.device, precisions)
    merged = merge_t2i(run_units(T2IEvalWorker, worker, units, profile.ray, profile.device))
    clear_results(folder)
    return merged


def generate_nvs(profile: Profile, ckpt: Path, rendered: dict[str, Path], out: Path) -> dict:
    """Table 4's objects as generation units: per-elevation rows."""
    from functools import partial

    from lumos.eval.nvs_heldout import merge_object_scores
    from lumos.runtime.units import clear_results, run_units, stamp

    folder, seed = _units(out, "nvs"), profile.sample.seed
    cid, fp = _fingerprint(profile, ckpt, "vae", "vision_encoder", "nvs")
    units = [ObjectUnit(i, seed, str(Path(d).resolve()), stamp(fp, seed, name, str(Path(d).resolve())),
                        str(folder / f"{i:06d}.safetensors")) for i, (name, d) in enumerate(rendered.items())]
    build = partial(build_nvs, cid, profile.vae, profile.vision_encoder, profile.eval)
    precisions = {"vae": profile.features.precision, "encoder": profile.features.precision}
    rows = merge_object_scores(run_units(NVSEvalWorker, (build, profile.diffusion, profile.device, precisions),
                                         units, profile.ray, profile.device))
    clear_results(folder)
    return rows


def generate_i2v(profile: Profile, ckpt: Path, name: str, rows: list, proto, out: Path) -> dict:
    """Table 5's clips of one benchmark as generation units, in waves
    until ``proto.samples`` decodable ones: FVD/KVD/PIC."""
    from functools import partial

    from lumos.eval.i2v_heldout import clip_metrics, collect_clips
    from lumos.runtime.units import clear_results, run_units, stamp

    e, folder = profile.eval, _units(out, f"i2v-{name}")
    cid, fp = _fingerprint(profile, ckpt, "vae", "vision_encoder", "i2v")
    build = partial(build_i2v, cid, profile.vae, profile.vision_encoder, e)
    precisions = {"vae": profile.features.precision, "encoder": profile.features.precision}
    worker = (build, profile.i2v.resolution, profile.diffusion, profile.device, precisions,
              profile.i2v.sample_strength)

    def score(batch):
        units = [ClipUnit(i, seed, row, proto, key := stamp(fp, name, seed, row.videoid, row.url, proto.model_dump()),
                          str(folder / f"{key}.safetensors")) for i, (row, seed) in enumerate(batch)]
        return run_units(I2VEvalWorker, worker, units, profile.ray, profile.device)

    got, skipped = collect_clips(rows, proto.samples, profile.sample.seed, score)
    clear_results(folder)
    return clip_metrics(got, skipped, e.kid_subsets, e.kid_subset_size)
