"""LAION's aesthetic predictor: an MLP on L2-normalised CLIP ViT-L/14 image embeddings.

The CLIP model comes from open_clip by name (and tag or checkpoint path); the MLP has the layout
of LAION's `improved-aesthetic-predictor` so its published ``.pth`` loads as is. With no
weights (the tiny profile) both are randomly initialised from a fixed seed: the scores are
meaningless but the code path, shapes and caching are the real ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import open_clip
import torch
from PIL import Image
from torch import nn

from lumos.config import Aesthetic
from lumos.io import local_file

MODEL_CONFIGS = Path(__file__).with_name("model_configs")  # lumos-tiny-clip and friends
open_clip.add_model_config(MODEL_CONFIGS)


class AestheticMLP(nn.Module):
    """improved-aesthetic-predictor's head: embedding (768 for ViT-L/14) -> score."""

    def __init__(self, dim: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim) -> (B,)
        return self.layers(x).squeeze(-1)


def _file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def scorer_fingerprint(cfg: Aesthetic) -> dict:
    """What predicted scores depend on (settings and weight files): a change recomputes them."""
    fp = cfg.model_dump(exclude={"batch_size"})
    for key in ("clip_pretrained", "mlp_weights"):
        if fp[key] and Path(fp[key]).is_file():
            fp[f"{key}_sha256"] = _file_sha256(fp[key])
    return fp


class AestheticScorer:
    """CLIP image embedding -> LAION MLP score, batched, on CPU or GPU."""

    def __init__(self, cfg: Aesthetic, device: str | None = None) -> None:
        self.cfg = cfg
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(0)  # random (tiny) weights are the same in every run
        clip, _, self.preprocess = open_clip.create_model_and_transforms(
            cfg.clip_model, pretrained=cfg.clip_pretrained)
        self.clip = clip.eval().to(self.device)
        self.mlp = AestheticMLP(clip.visual.output_dim)
        if cfg.mlp_weights:
            state = torch.load(local_file(cfg.mlp_weights), map_location="cpu", weights_only=True)
            self.mlp.load_state_dict(state)
        self.mlp.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[float]:
        scores: list[float] = []
        for i in range(0, len(images), self.cfg.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[i: i + self.cfg.batch_size]])
            emb = self.clip.encode_image(batch.to(self.device))
            emb = emb / emb.norm(dim=-1, keepdim=True)
            scores.extend(self.mlp(emb.float()).cpu().tolist())
        return scores
