"""Image metrics: FID/KID (Tables 1-2), CLIP score (Fig. 2a), PSNR/SSIM/LPIPS for NVS (Table 4).

Images may be given as a uint8 tensor ``(N, 3, H, W)``, a float tensor in [0, 1], or a list of
PIL images (any sizes when ``resolution`` is given: each is resized to ``resolution`` square,
as the protocols in the ``eval`` params section say).

Public functions::

    to_uint8(images, resolution=None) -> uint8 Tensor (N, 3, H, W)
    frechet_kernel_distances(gen_feats, ref_feats, kid_subsets=100, kid_subset_size=1000)
        -> {"fid": float, "kid": float, "kid_std": float}
    fid_kid(generated, reference, extractor, resolution=None, batch_size=64, kid_subsets=100,
            kid_subset_size=1000) -> {"fid", "kid", "kid_std", "n_generated", "n_reference"}
    ClipScorer(model=None, seed=0); clip_score(images, texts, scorer, batch_size=32)
        -> {"clip_score": float, "per_sample": list[float], "cosine": list[float]}
    psnr(pred, target) -> Tensor (N,);  ssim(pred, target) -> Tensor (N,)
    lpips_model(net="alex", backbone_weights=None, seed=0) -> nn.Module
    lpips(pred, target, model) -> Tensor (N,)
    gso_views(azimuths=16, elevations=(0, 30)) -> [(elevation, azimuth), ...]
    nvs_metrics(pred, target, elevations, lpips_net=None)
        -> {"elevation_0": {"psnr", "ssim", "lpips", "views"}, "elevation_30": {...}}

FID and KID are torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance``
(``feature=`` a module): features are computed once by a ``lumos.eval.features`` extractor
and handed to both metrics through a pass-through module, so a cached reference set
(e.g. COCO-30K's features) can be reused.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from lumos.encoders.frozen import seeded
from lumos.io import local_file
from lumos.eval.features import extract_features

Images = torch.Tensor | Sequence[Image.Image]


# --------------------------------------------------------------------------- inputs
def to_uint8(images: Images, resolution: int | None = None) -> torch.Tensor:
    """Any accepted image batch -> uint8 (N, 3, H, W), resized to ``resolution`` square if given."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N,3,H,W), got {tuple(images.shape)}")
        x = images
        if x.dtype != torch.uint8:
            if x.min() < -1e-3 or x.max() > 1 + 1e-3:
                raise ValueError("float images must lie in [0, 1]")
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        if resolution is not None and tuple(x.shape[-2:]) != (resolution, resolution):
            x = F.interpolate(x.float(), size=(resolution, resolution), mode="bicubic",
                              antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return x
    arrays = []
    for im in images:
        im = im.convert("RGB")
        if resolution is not None and im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(im))
    if not arrays:
        raise ValueError("no images")
    if len({a.shape for a in arrays}) > 1:
        raise ValueError("images differ in size: pass resolution= to resize them")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _unit_float(images: Images) -> torch.Tensor:
    x = to_uint8(images) if not (isinstance(images, torch.Tensor) and images.is_floating_point()) else images
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


# --------------------------------------------------------------------------- FID / KID
class _GivenFeatures(nn.Module):
    """Pass-through 'feature' for torchmetrics: the features were extracted already."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def frechet_kernel_distances(gen_feats: torch.Tensor, ref_feats: torch.Tensor, kid_subsets: int = 100,
                             kid_subset_size: int = 1000) -> dict[str, float]:
    """Fréchet distance and polynomial-kernel MMD (KID's) between two feature sets (N, D).

    On Inception features these are FID and KID; on I3D features, FVD and KVD (Table 5)."""
    if gen_feats.ndim != 2 or ref_feats.ndim != 2 or gen_feats.shape[1] != ref_feats.shape[1]:
        raise ValueError(f"feature sets must be (N, D) of one D, got {tuple(gen_feats.shape)} "
                         f"and {tuple(ref_feats.shape)}")
    if min(len(gen_feats), len(ref_feats)) < 2:
        raise ValueError("need at least 2 samples in each set")
    given = _GivenFeatures(gen_feats.shape[1])
    fid = FrechetInceptionDistance(feature=given, reset_real_features=True)
    subset = min(kid_subset_size, len(gen_feats), len(ref_feats))
    with warnings.catch_warnings():  # "will save all extracted features": that is the point
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kid = KernelInceptionDistance(feature=given, subsets=kid_subsets, subset_size=subset)
    gen, ref = gen_feats.double(), ref_feats.double()
    for metric in (fid, kid):
        metric.update(ref, real=True)
        metric.update(gen, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets at random: fix them
        torch.manual_seed(0)
        kid_mean, kid_std = kid.compute()
    return {"fid": max(float(fid.compute()), 0.0), "kid": float(kid_mean), "kid_std": float(kid_std)}


def fid_kid(generated: Images, reference: Images, extractor: nn.Module, resolution: int | None = None,
            batch_size: int = 64, kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict:
    """FID and KID of ``generated`` against ``reference`` (COCO-30K: Table 2; ImageNet: Table 1)."""
    gen = extract_features(to_uint8(generated, resolution), extractor, batch_size)
    ref = extract_features(to_uint8(reference, resolution), extractor, batch_size)
    out = frechet_kernel_distances(gen, ref, kid_subsets, kid_subset_size)
    return {**out, "n_generated": len(gen), "n_reference": len(ref)}


# --------------------------------------------------------------------------- CLIP score
class ClipScorer:
    """An open_clip model for CLIP score: ``"ARCH:TAG"``, ``"ARCH:/path/ckpt"``, ``"hf-hub:..."``
    or ``None`` for the seeded random ``lumos-tiny-clip`` (see lumos.encoders.clip)."""

    def __init__(self, model: str | None = None, seed: int = 0) -> None:
        import open_clip

        from lumos.encoders.clip import parse_clip_pretrained

        name, weights = parse_clip_pretrained(model)
        self.model, _, self.preprocess = seeded(
            lambda: open_clip.create_model_and_transforms(name, pretrained=weights), seed)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)

    @torch.no_grad()
    def cosine(self, images: Images, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity of each image's and its text's CLIP embedding, (N,)."""
        pil = images if not isinstance(images, torch.Tensor) else [
            Image.fromarray(a) for a in to_uint8(images).permute(0, 2, 3, 1).numpy()]
        if len(pil) != len(texts):
            raise ValueError(f"{len(pil)} images but {len(texts)} texts")
        pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in pil])
        img = F.normalize(self.model.encode_image(pixels).float(), dim=-1)
        txt = F.normalize(self.model.encode_text(self.tokenizer(list(texts))).float(), dim=-1)
        return (img * txt).sum(-1)

    def __call__(self, images: Images, texts: Sequence[str]) -> torch.Tensor:
        """100 * max(cos(image, text), 0) per pair (torchmetrics' CLIPScore definition)."""
        return 100.0 * self.cosine(images, texts).clamp(min=0)


def clip_score(images: Images, texts: Sequence[str], scorer: ClipScorer, batch_size: int = 32) -> dict:
    """Mean CLIP score of image-text pairs (Fig. 2a), each pair's, and the raw cosines
    (a random tiny CLIP often gives negative cosines, which the score clips to 0)."""
    cos = torch.cat([scorer.cosine(images[i:i + batch_size], texts[i:i + batch_size])
                     for i in range(0, len(images), batch_size)])
    scores = 100.0 * cos.clamp(min=0)
    return {"clip_score": float(scores.mean()), "per_sample": scores.tolist(), "cosine": cos.tolist()}


# --------------------------------------------------------------------------- PSNR / SSIM / LPIPS
def psnr(pred: Images, target: Images) -> torch.Tensor:
    """Per-image PSNR in dB on [0, 1] pixels; inf for identical images."""
    p, t = _unit_float(pred), _unit_float(target)
    return peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(pred: Images, target: Images) -> torch.Tensor:
    """Per-image SSIM (Gaussian 11x11, sigma 1.5) on [0, 1] pixels; 1 for identical images."""
    p, t = _unit_float(pred), _unit_float(target)
    return structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")


def lpips_model(net: str = "alex", backbone_weights: str | None = None, seed: int = 0) -> nn.Module:
    """LPIPS with its real linear heads (v0.1, shipped inside torchmetrics) on a torchvision
    backbone (alexnet, vgg16 or squeezenet1_1): ImageNet weights from ``backbone_weights``
    (a torchvision state-dict file, e.g. ``vgg16-397923af.pth``), else seeded random ones."""
    import torchvision
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    tv_name = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}[net]
    model = seeded(lambda: _NoTrainLpips(net=net, pnet_rand=True), seed)  # random backbone, real heads
    if backbone_weights is not None:
        tv = getattr(torchvision.models, tv_name)(weights=None)
        tv.load_state_dict(torch.load(local_file(backbone_weights), map_location="cpu", weights_only=True))
        # The LPIPS slices hold torchvision's `features` layers under their original indices.
        for sl in (m for n, m in model.net.named_children() if n.startswith("slice")):
            for idx, layer in sl.named_children():
                layer.load_state_dict(tv.features[int(idx)].state_dict())
    return model.eval()


@torch.no_grad()
def lpips(pred: Images, target: Images, model: nn.Module, batch_size: int = 32) -> torch.Tensor:
    """Per-image LPIPS distance (lower is closer; 0 for identical images)."""
    p, t = _unit_float(pred), _unit_float(target)
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} differ")
    out = [model(p[i:i + batch_size], t[i:i + batch_size], normalize=True).reshape(-1)
           for i in range(0, len(p), batch_size)]
    return torch.cat(out)


# --------------------------------------------------------------------------- NVS protocol
def gso_views(azimuths: int = 16, elevations: Sequence[float] = (0.0, 30.0)) -> list[tuple[float, float]]:
    """The GSO test views of Table 4: ``azimuths`` evenly spaced azimuths at each elevation."""
    return [(float(e), 360.0 * i / azimuths) for e in elevations for i in range(azimuths)]


def nvs_metrics(pred: Images, target: Images, elevations: Sequence[float],
                lpips_net: nn.Module | None = None) -> dict[str, dict[str, float]]:
    """PSNR/SSIM/LPIPS per elevation, as the columns of Table 4.

    ``pred``/``target``: (N, 3, H, W), one row per rendered test view; ``elevations``: each
    view's elevation in degrees. ``lpips_net``: from :func:`lpips_model` (default: alex, random
    backbone). Returns ``{"elevation_0": {"psnr", "ssim", "lpips", "views"}, ...}``."""
    p, t = _unit_float(pred), _unit_float(target)
    if p.shape != t.shape or len(elevations) != len(p):
        raise ValueError(f"pred {tuple(p.shape)}, target {tuple(t.shape)} and "
                         f"{len(elevations)} elevations do not match")
    lpips_net = lpips_net if lpips_net is not None else lpips_model()
    per = {"psnr": psnr(p, t), "ssim": ssim(p, t), "lpips": lpips(p, t, lpips_net)}
    elev = torch.tensor([float(e) for e in elevations])
    rows = {}
    for e in sorted(set(elev.tolist())):
        mask = elev == e
        rows[f"elevation_{e:g}"] = {k: float(v[mask].mean()) for k, v in per.items()} | {
            "views": int(mask.sum())}
    return rows
