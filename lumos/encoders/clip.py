"""CLIP image tower from open_clip (paper 4.3: CLIP ViT-L/14 vs DINO vs MoCo v3).

``cfg.pretrained`` names the model and its weights in one string: ``"ARCH:TAG"`` (the paper's
``"ViT-L-14:openai"``), ``"ARCH:/path/to/checkpoint.pt"``, ``"hf-hub:org/repo"`` or
``"local-dir:/path"``; ``None`` builds the random ``lumos-tiny-clip``. Tokens are the last
block's outputs after ``ln_post``, before the projection: [CLS] is the token the pooled image
embedding comes from, and patches share its width and space.
"""

from __future__ import annotations

import open_clip
import torch
from open_clip.transformer import VisionTransformer

from lumos.config import VisionEncoder
from lumos.curation.aesthetic import MODEL_CONFIGS
from lumos.encoders.frozen import seeded
from lumos.encoders.vision import ENCODERS, VisionTokenEncoder, input_side

TINY_MODEL = "lumos-tiny-clip"
open_clip.add_model_config(MODEL_CONFIGS)  # idempotent; defines TINY_MODEL


def parse_clip_pretrained(pretrained: str | None) -> tuple[str, str | None]:
    """``cfg.pretrained`` -> (open_clip model name, weights tag or path or None)."""
    if pretrained is None:
        return TINY_MODEL, None
    if pretrained.startswith(("hf-hub:", "local-dir:")):
        return pretrained, None
    arch, sep, weights = pretrained.partition(":")
    if not (sep and arch and weights):
        raise ValueError(
            f"clip pretrained must be 'ARCH:TAG', 'ARCH:/path/to/ckpt', 'hf-hub:org/repo' or "
            f"'local-dir:/path' (e.g. 'ViT-L-14:openai'), got {pretrained!r}")
    return arch, weights


class OpenCLIPEncoder(VisionTokenEncoder):
    """open_clip ``VisionTransformer``: tokens via its ``forward_intermediates``."""

    family = "clip"

    def __init__(self, visual: VisionTransformer, cfg: VisionEncoder) -> None:
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise ValueError("clip needs an open_clip VisionTransformer tower without attention "
                             f"pooling, got {type(visual).__name__}")
        super().__init__(visual, cfg, width=visual.transformer.width,
                         patch_size=visual.patch_size[0],
                         mean=visual.image_mean, std=visual.image_std)

    def _features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.backbone.forward_intermediates(
            pixels, indices=1, normalize_intermediates=True, intermediates_only=True,
            output_fmt="NLC", output_extra_tokens=True)
        return out["image_intermediates_prefix"][-1], out["image_intermediates"][-1]


@ENCODERS.register("clip")
def build_clip(cfg: VisionEncoder) -> OpenCLIPEncoder:
    """The image tower of an open_clip model; the text tower is discarded."""
    name, weights = parse_clip_pretrained(cfg.pretrained)
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip model {name!r}")
    vision_cfg = model_cfg["vision_cfg"]
    if vision_cfg.get("timm_model_name"):
        raise ValueError(f"{name!r} has a timm image tower; clip needs open_clip's own ViT")
    side = input_side(cfg.resolution, vision_cfg["patch_size"])
    # force_image_size resizes a checkpoint's position embeddings to cfg.resolution.
    model = seeded(lambda: open_clip.create_model(name, pretrained=weights, force_image_size=side))
    return OpenCLIPEncoder(model.visual, cfg)
