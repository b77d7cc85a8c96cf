"""Image-to-video metrics of Table 5: FVD, KVD and PIC (UCF-101, MSR-VTT protocols).

Videos are ``(B, T, 3, H, W)`` tensors, uint8 or float in [0, 1]; first frames ``(B, 3, H, W)``.

Public functions::

    fvd_kvd(gen_videos, ref_videos, extractor, batch_size=8, kid_subsets=100, kid_subset_size=1000)
        -> {"fvd": float, "kvd": float, "kvd_std": float}
    pic(gen_videos, first_frames, lpips_net) -> {"pic": float, "per_video": list[float]}
    video_metrics(gen_videos, ref_videos, first_frames, extractor, lpips_net=None, ...)
        -> {"fvd", "kvd", "kvd_std", "pic"}

FVD is the Fréchet distance and KVD the polynomial-kernel MMD (the KID estimator) between
I3D features of generated and reference clips (Unterthiner et al., FVD paper [48]); the
extractor is ``lumos.eval.features.video_extractor``. Table 5 reports KVD as is; some code
scales it by 1e3.

PIC, Perceptual Input Conformity (DynamiCrafter [52]): PIC = 1/L sum_l (1 - D(x_in, x_l)) over
the L generated frames, D a perceptual distance between the input image and each frame.
DynamiCrafter uses DreamSim for D; its weights are not available here, so D is LPIPS (same
range, 0 for identical images). A video whose every frame equals the input scores 1, the maximum.
"""

from __future__ import annotations

import torch
from torch import nn

from lumos.eval.features import extract_features
from lumos.eval.image_metrics import frechet_kernel_distances, lpips, lpips_model


def _check_videos(videos: torch.Tensor, name: str) -> None:
    if videos.ndim != 5 or videos.shape[2] != 3:
        raise ValueError(f"{name}: expected videos of shape (B,T,3,H,W), got {tuple(videos.shape)}")


def fvd_kvd(gen_videos: torch.Tensor, ref_videos: torch.Tensor, extractor: nn.Module, batch_size: int = 8,
            kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict[str, float]:
    """FVD and KVD of generated against reference clips (Table 5)."""
    _check_videos(gen_videos, "gen_videos")
    _check_videos(ref_videos, "ref_videos")
    gen = extract_features(gen_videos, extractor, batch_size)
    ref = extract_features(ref_videos, extractor, batch_size)
    d = frechet_kernel_distances(gen, ref, kid_subsets, kid_subset_size)
    return {"fvd": d["fid"], "kvd": d["kid"], "kvd_std": d["kid_std"]}


def pic(gen_videos: torch.Tensor, first_frames: torch.Tensor, lpips_net: nn.Module) -> dict:
    """Perceptual Input Conformity: mean over videos of mean_l (1 - LPIPS(input, frame_l))."""
    _check_videos(gen_videos, "gen_videos")
    b, t = gen_videos.shape[:2]
    if first_frames.shape != (b, *gen_videos.shape[2:]):
        raise ValueError(f"first_frames {tuple(first_frames.shape)} do not match videos "
                         f"{tuple(gen_videos.shape)}")
    inputs = first_frames.unsqueeze(1).expand(-1, t, -1, -1, -1).flatten(0, 1)
    d = lpips(gen_videos.flatten(0, 1), inputs, lpips_net).view(b, t)
    per_video = (1.0 - d).mean(dim=1)
    return {"pic": float(per_video.mean()), "per_video": per_video.tolist()}


def video_metrics(gen_videos: torch.Tensor, ref_videos: torch.Tensor, first_frames: torch.Tensor,
                  extractor: nn.Module, lpips_net: nn.Module | None = None, batch_size: int = 8,
                  kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict[str, float]:
    """One row of Table 5 for one dataset: FVD, KVD (and its std over subsets), PIC."""
    out = fvd_kvd(gen_videos, ref_videos, extractor, batch_size, kid_subsets, kid_subset_size)
    out["pic"] = pic(gen_videos, first_frames, lpips_net if lpips_net is not None else lpips_model())["pic"]
    return out
