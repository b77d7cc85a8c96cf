"""Which encoder tokens condition the diffusion model (paper 4.3 "Ablating different features").

``cls``: the single global [CLS] token (the paper's choice); ``patch``: the local patch tokens;
``all``: [CLS] + patches; ``topk``: [CLS] + the k patches most correlated with [CLS]
(supplement F.2: k = 119, so that 120 tokens match T5's length).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TOKEN_MODES = ("cls", "patch", "all", "topk")


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
    if mode == "topk":
        check_topk(k, num_patches)
        return 1 + k
    raise ValueError(f"unknown token mode {mode!r}; known: {list(TOKEN_MODES)}")


def select_tokens(cls: torch.Tensor, patches: torch.Tensor, mode: str, k: int) -> torch.Tensor:
    """[CLS] (B,1,d) and patches (B,P,d) -> the mode's tokens (B,M,d).

    ``topk`` orders the chosen patches by descending cosine similarity to [CLS].
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
    raise ValueError(f"unknown token mode {mode!r}; known: {list(TOKEN_MODES)}")
