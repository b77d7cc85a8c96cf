"""Which encoder tokens condition the diffusion model (paper 4.3 "Ablating different features").

``cls``: the single global [CLS] token (the paper's choice); ``patch``: the local patch tokens;
``all``: [CLS] + patches; ``topk``: [CLS] + the k patches most correlated with [CLS]
(supplement F.2: k = 119, so that 120 tokens match T5's length); ``random``: [CLS] + k patches
drawn at random per image (F.2's control), seeded by the image's own pixels so a cached feature
does not depend on batch or worker order.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

TOKEN_MODES = ("cls", "patch", "all", "topk", "random")


def check_topk(k: int, num_patches: int) -> None:
    if not 0 < k <= num_patches:
        raise ValueError(
            f"topk={k} must be between 1 and the number of patch tokens ({num_patches})")


def token_count(mode: str, num_patches: int, k: int) -> int:
    """M, the number of condition tokens a mode gives: 1, P, 1+P or 1+k."""
    if mode == "cls":
        return 1
    if mode == "patch":
        return num_patches
    if mode == "all":
        return 1 + num_patches
    if mode in ("topk", "random"):
        check_topk(k, num_patches)
        return 1 + k
    raise ValueError(f"unknown token mode {mode!r}; known: {list(TOKEN_MODES)}")


def image_seeds(images: torch.Tensor, seed: int) -> list[int]:
    """One seed per image (B,3,H,W in [0,1]) from ``seed`` and its 8-bit pixels."""
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return [int.from_bytes(hashlib.blake2b(p.numpy().tobytes(), digest_size=8,
                                           key=str(seed).encode()).digest(), "little") >> 1
            for p in pixels]


def random_patches(patches: torch.Tensor, k: int, seeds: list[int]) -> torch.Tensor:
    """(B,k) patch indices, drawn without replacement per image from its seed."""
    return torch.stack([torch.randperm(patches.shape[1], generator=torch.Generator().manual_seed(s))[:k]
                        for s in seeds]).to(patches.device)


def select_tokens(cls: torch.Tensor, patches: torch.Tensor, mode: str, k: int,
                  seeds: list[int] | None = None) -> torch.Tensor:
    """[CLS] (B,1,d) and patches (B,P,d) -> the mode's tokens (B,M,d).

    ``topk`` orders the chosen patches by descending cosine similarity to [CLS]; ``random``
    takes k patches drawn per image from ``seeds`` (one per image, see :func:`image_seeds`).
    """
    if mode == "cls":
        return cls
    if mode == "patch":
        return patches
    if mode == "all":
        return torch.cat([cls, patches], dim=1)
    if mode == "topk":
        check_topk(k, patches.shape[1])
        sim = F.cosine_similarity(patches.float(), cls.float(), dim=-1)  # (B,P)
        idx = sim.topk(k, dim=1, sorted=True).indices  # (B,k), most similar first
        chosen = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([cls, chosen], dim=1)
    if mode == "random":
        check_topk(k, patches.shape[1])
        if seeds is None or len(seeds) != patches.shape[0]:
            raise ValueError("tokens: random needs one seed per image")
        idx = random_patches(patches, k, seeds)
        chosen = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([cls, chosen], dim=1)
    raise ValueError(f"unknown token mode {mode!r}; known: {list(TOKEN_MODES)}")
