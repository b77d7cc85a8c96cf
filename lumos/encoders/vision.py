"""The frozen image encoder tau_img of eq. (1) behind one interface, and its registry.

Every family (``dino``, ``dinov2``, ``mocov3``, ``clip``) subclasses
:class:`VisionTokenEncoder` and implements ``_features``: normalised pixels -> ([CLS], patches)
from the last block after the final norm. The base class resizes and normalises the input and
picks the condition tokens (:mod:`lumos.encoders.tokens`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lumos.config import VisionEncoder
from lumos.encoders.frozen import Frozen, check_images
from lumos.encoders.tokens import check_topk, image_seeds, select_tokens, token_count
from lumos.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINO, DINOv2 and MoCo v3 were trained with these
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_side(resolution: int, patch_size: int) -> int:
    """The square side fed to the backbone: ``resolution`` rounded down to whole patches."""
    if resolution < patch_size:
        raise ValueError(f"resolution {resolution} is smaller than the patch size {patch_size}")
    return resolution // patch_size * patch_size


class VisionTokenEncoder(Frozen):
    """Frozen encoder: images (B,3,H,W) in [0,1], any size -> condition tokens (B,M,width)."""

    family: str = ""

    def __init__(self, backbone: nn.Module, cfg: VisionEncoder, *, width: int, patch_size: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.width = int(width)
        self.patch_size = int(patch_size)
        self.input_size = input_side(cfg.resolution, self.patch_size)
        self.num_patches = (self.input_size // self.patch_size) ** 2
        if cfg.tokens in ("topk", "random"):
            check_topk(cfg.topk, self.num_patches)
        self.num_tokens = token_count(cfg.tokens, self.num_patches, cfg.topk)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @property
    def tokens(self) -> str:
        return self.cfg.tokens

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0,1] images -> the backbone's input: resized (squashed) to a square, normalised."""
        check_images(images, low=0.0, high=1.0)
        x = images.to(device=self.mean.device, dtype=torch.float32)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic",
                              align_corners=False, antialias=True).clamp(0.0, 1.0)
        x = (x - self.mean) / self.std
        return x.to(next(self.backbone.parameters()).dtype)

    def _features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised pixels -> ([CLS] (B,1,d), patch tokens (B,P,d)); no register tokens."""
        raise NotImplementedError

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[0,1] images -> ([CLS] (B,1,width), patches (B,P,width)) before token selection."""
        cls, patches = self._features(self.preprocess(images))
        if cls.shape[1:] != (1, self.width) or patches.shape[1:] != (self.num_patches, self.width):
            raise RuntimeError(
                f"{self.family} gave CLS {tuple(cls.shape)} and patches {tuple(patches.shape)}; "
                f"expected (B,1,{self.width}) and (B,{self.num_patches},{self.width})")
        return cls, patches

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0,1] images (B,3,H,W) -> tokens (B, num_tokens, width) for ``cfg.tokens``."""
        cls, patches = self.features(images)
        seeds = image_seeds(images, self.cfg.patch_seed) if self.cfg.tokens == "random" else None
        return select_tokens(cls, patches, self.cfg.tokens, self.cfg.topk, seeds)

    def extra_repr(self) -> str:
        return (f"family={self.family}, tokens={self.cfg.tokens}, num_tokens={self.num_tokens}, "
                f"width={self.width}, input_size={self.input_size}")


ENCODERS: Registry[Callable[[VisionEncoder], VisionTokenEncoder]] = Registry("vision encoder")


def build_vision_encoder(cfg: VisionEncoder) -> VisionTokenEncoder:
    """The frozen encoder ``cfg.name`` names, with ``cfg.pretrained`` weights (None: tiny)."""
    import lumos.encoders  # noqa: F401  (registers every family)

    return ENCODERS[cfg.name](cfg)


def num_tokens(cfg: VisionEncoder, num_patches: int | None = None) -> int:
    """M for ``cfg``: 1 (cls), 1+k (topk), P (patch), 1+P (all).

    ``patch``/``all`` (and a ``topk`` check against P) need the patch count: give it, or the
    encoder is built to find it. A built encoder's ``num_tokens`` attribute is the same number.
    """
    if cfg.tokens == "cls":
        return 1
    if num_patches is None:
        if cfg.tokens in ("topk", "random"):
            return 1 + cfg.topk
        return build_vision_encoder(cfg).num_tokens
    return token_count(cfg.tokens, num_patches, cfg.topk)
