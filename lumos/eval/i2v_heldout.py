"""Table 5 on held-out clips: UCF-101 and MSR-VTT in their own layouts -> Lumos-I2V from each
clip's first frame -> FVD/KVD against the held-out clips, PIC against the first frame.

    heldout_rows(name, reference)             the benchmark's VideoRows (read_ucf101 / read_msrvtt)
    evaluate_clips(rows, n, protocol, generate, extractor, lpips_net) -> {"fvd", "kvd", "pic", ...}

Clips are read one at a time (decoded, generated, reduced to one feature row and one PIC
value, then dropped), so memory grows with the feature width times the count, not with the
frames. MSR-VTT's captions are not used: I2V is conditioned on the first frame alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch
import torch.nn.functional as F
from torch import nn

from lumos.config import VideoProtocol
from lumos.eval.features import extract_features
from lumos.eval.image_metrics import frechet_kernel_distances
from lumos.eval.video_metrics import pic
from lumos.video.webvid import VideoError, VideoRow, read_msrvtt, read_ucf101, sample_frames

MSRVTT_ANNOTATION = Path("annotation") / "MSR_VTT.json"
MSRVTT_VIDEOS = Path("videos") / "all"

# (first frame (3,R,R) in [0, 1], frames, seed) -> generated clip (frames,3,r,r) in [0, 1]
Generate = Callable[[torch.Tensor, int, int], torch.Tensor]


def heldout_rows(name: str, reference: str | Path) -> list[VideoRow]:
    """The clips of ``ucf101`` (``<Class>/<video>.avi``) or ``msrvtt`` (``annotation/MSR_VTT.json``
    + ``videos/all/<id>.mp4``), in the reader's order."""
    reference = Path(reference)
    if name == "ucf101":
        return read_ucf101(reference)
    if name == "msrvtt":
        if not (reference / MSRVTT_ANNOTATION).is_file():
            raise FileNotFoundError(f"no MSR-VTT annotation at {reference / MSRVTT_ANNOTATION}")
        return read_msrvtt(reference / MSRVTT_ANNOTATION, reference / MSRVTT_VIDEOS)
    raise ValueError(f"eval.videos.{name}: no reader for this benchmark (ucf101 | msrvtt)")


def _path(row: VideoRow) -> str:
    return unquote(urlsplit(row.url).path)


def evaluate_clips(rows: Sequence[VideoRow], n: int, protocol: VideoProtocol, generate: Generate,
                   extractor: nn.Module, lpips_net: nn.Module, seed: int, kid_subsets: int,
                   kid_subset_size: int) -> dict:
    """FVD/KVD/PIC over the first ``n`` decodable clips (too short or broken ones are counted)."""
    gen_feats, ref_feats, pics, keys, skipped = [], [], [], [], []
    for row in rows:
        if len(keys) == n:
            break
        try:
            frames = sample_frames(_path(row), protocol.frames, protocol.frame_interval, protocol.resolution)
        except VideoError as err:
            skipped.append(f"{row.videoid}: {err}")
            continue
        real = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (F,3,R,R)
        gen = generate(real[0], protocol.frames, seed + len(keys)).float().clamp(0, 1)
        if gen.shape[-1] != protocol.resolution:
            gen = F.interpolate(gen, size=protocol.resolution, mode="bilinear", antialias=True).clamp(0, 1)
        feats = extract_features(torch.stack([gen, real]), extractor, 2)
        gen_feats.append(feats[:1])
        ref_feats.append(feats[1:])
        pics.append(pic(gen[None], real[:1], lpips_net)["pic"])
        keys.append(row.videoid)
    if len(keys) < 2:
        raise ValueError(f"only {len(keys)} decodable held-out clips (need 2); skipped: {skipped[:3]}")
    d = frechet_kernel_distances(torch.cat(gen_feats), torch.cat(ref_feats), kid_subsets,
                                 max(2, min(kid_subset_size, len(keys))))
    return {"fvd": d["fid"], "kvd": d["kid"], "kvd_std": d["kid_std"], "pic": sum(pics) / len(pics),
            "keys": keys, "skipped": len(skipped)}
