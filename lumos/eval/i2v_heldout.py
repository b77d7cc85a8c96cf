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


def score_clip(row: VideoRow, protocol: VideoProtocol, generate: Generate, extractor: nn.Module,
               lpips_net: nn.Module, seed: int) -> dict:
    """One held-out clip (a generation unit): its generated and real feature rows and PIC, or
    ``{"skipped": reason}`` when it cannot be decoded (too short, broken)."""
    try:
        frames = sample_frames(_path(row), protocol.frames, protocol.frame_interval, protocol.resolution)
    except VideoError as err:
        return {"skipped": f"{row.videoid}: {err}"}
    real = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (F,3,R,R)
    gen = generate(real[0], protocol.frames, seed).float().cpu().clamp(0, 1)
    if gen.shape[-1] != protocol.resolution:
        gen = F.interpolate(gen, size=protocol.resolution, mode="bilinear", antialias=True).clamp(0, 1)
    feats = extract_features(torch.stack([gen, real]), extractor, 2)
    return {"generated": feats[:1], "reference": feats[1:], "pic": pic(gen[None], real[:1], lpips_net)["pic"],
            "key": row.videoid}


# [(row, seed), ...] -> their score_clip results, in order (a list, or lazily), in this process or as units
ScoreClips = Callable[[list[tuple[VideoRow, int]]], list[dict]]


def collect_clips(rows: Sequence[VideoRow], n: int, seed: int, score: ScoreClips) -> tuple[list[dict], list[str]]:
    """The first ``n`` decodable clips' results and the skipped clips' reasons. The k-th decodable
    clip draws its noise from ``seed + k``, whoever generates it: clips go out in waves of the
    number still missing; after a skipped clip, the rest of its wave is sent again with the seeds
    shifted (a decode failure is cheap, and seeds never depend on the wave's split)."""
    got: list[dict] = []
    skipped: list[str] = []
    pos = 0
    while len(got) < n and pos < len(rows):
        wave = rows[pos: pos + n - len(got)]
        for k, result in enumerate(score([(row, seed + len(got) + k) for k, row in enumerate(wave)])):
            pos += 1
            if "skipped" in result:
                skipped.append(result["skipped"])
                break  # later clips of this wave used seeds one too high: they go out again
            got.append(result)
        # loop: pos is past the last accepted or skipped clip
    return got, skipped


def clip_metrics(got: Sequence[dict], skipped: Sequence[str], kid_subsets: int, kid_subset_size: int) -> dict:
    """FVD/KVD/PIC of collected clips (in clip order)."""
    if len(got) < 2:
        raise ValueError(f"only {len(got)} decodable held-out clips (need 2); skipped: {list(skipped)[:3]}")
    d = frechet_kernel_distances(torch.cat([r["generated"] for r in got]), torch.cat([r["reference"] for r in got]),
                                 kid_subsets, max(2, min(kid_subset_size, len(got))))
    pics = [r["pic"] for r in got]
    return {"fvd": d["fid"], "kvd": d["kid"], "kvd_std": d["kid_std"], "pic": sum(pics) / len(pics),
            "keys": [r["key"] for r in got], "skipped": len(skipped)}


def evaluate_clips(rows: Sequence[VideoRow], n: int, protocol: VideoProtocol, generate: Generate,
                   extractor: nn.Module, lpips_net: nn.Module, seed: int, kid_subsets: int,
                   kid_subset_size: int) -> dict:
    """FVD/KVD/PIC over the first ``n`` decodable clips (too short or broken ones are counted),
    in this process (evaluate-i2v runs the same clips as generation units)."""
    def score(batch):  # lazily: a wave stops at its first skipped clip
        return (score_clip(row, protocol, generate, extractor, lpips_net, s) for row, s in batch)

    got, skipped = collect_clips(rows, n, seed, score)
    return clip_metrics(got, skipped, kid_subsets, kid_subset_size)
