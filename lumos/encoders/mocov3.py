"""MoCo v3 ViT-B/16 (paper 4.3, the encoder RCG uses) as a timm ``VisionTransformer``.

MoCo v3 publishes training checkpoints (``vit-b-300ep.pth.tar``): a ``state_dict`` whose
backbone keys start with ``module.base_encoder.`` next to the momentum encoder and predictor.
The backbone keys match timm's ViT; the projection head is dropped. ``pretrained`` is the
checkpoint's path, optionally after the timm architecture it holds: ``"vit_small_patch16_224:
/path/vit-s-300ep.pth.tar"`` (default ``vit_base_patch16_224``, the paper's ViT-B/16).
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from lumos.config import VisionEncoder
from lumos.encoders.frozen import seeded
from lumos.encoders.vision import (ENCODERS, IMAGENET_MEAN, IMAGENET_STD, VisionTokenEncoder,
                                   input_side)

ARCH = "vit_base_patch16_224"  # MoCo v3 ViT-B/16
PATCH = 16


class TimmViTEncoder(VisionTokenEncoder):
    """timm ViT: ``forward_features`` is (B, prefix + P, d) after the final norm, [CLS] first."""

    family = "mocov3"

    def __init__(self, model: VisionTransformer, cfg: VisionEncoder) -> None:
        if getattr(model, "cls_token", None) is None:
            raise ValueError("the timm ViT has no class token")
        super().__init__(model, cfg, width=model.embed_dim,
                         patch_size=model.patch_embed.patch_size[0],
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def _features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone.forward_features(pixels)
        return h[:, :1], h[:, self.backbone.num_prefix_tokens:]


def mocov3_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The base encoder's weights from a MoCo v3 checkpoint (or a plain ViT state dict), no head."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt.get("model", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a checkpoint with a state dict")
    prefixes = ("module.base_encoder.", "base_encoder.", "module.")
    if any(k.startswith("module.base_encoder.") or k.startswith("base_encoder.") for k in state):
        prefixes = ("module.base_encoder.", "base_encoder.")  # skip momentum encoder, predictor
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    out = {}
    for key, value in state.items():
        for p in prefixes:
            if key.startswith(p):
                key = key[len(p):]
                break
        if not key.startswith(("head.", "fc_norm.")):
            out[key] = value
    return out


def load_mocov3(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Load a MoCo v3 checkpoint into ``model``; a missing backbone weight is an error."""
    state = mocov3_state_dict(path)
    pos = state.get("pos_embed")
    if pos is not None and pos.shape != model.pos_embed.shape:  # another input resolution
        state["pos_embed"] = resample_abs_pos_embed(
            pos, new_size=list(model.patch_embed.grid_size),
            num_prefix_tokens=model.num_prefix_tokens)
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{path}: {len(wrong)} weights do not fit this {type(model).__name__} "
                         f"backbone (e.g. {wrong[0]}): name its timm arch, '<arch>:{path}'")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("head.", "fc_norm."))]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks {len(missing)} ViT weights: {missing[:8]}")
    if result.unexpected_keys:
        raise ValueError(f"{path}: {len(result.unexpected_keys)} weights do not fit a "
                         f"{type(model).__name__} backbone: {result.unexpected_keys[:8]}")


def parse_mocov3_pretrained(pretrained: str) -> tuple[str, Path]:
    """``"[timm_arch:]path"`` -> (timm architecture, checkpoint path)."""
    arch, sep, path = pretrained.partition(":")
    if not sep or "/" in arch or arch not in timm.list_models(arch):
        arch, path = ARCH, pretrained
    return arch, Path(path)


@ENCODERS.register("mocov3")
def build_mocov3(cfg: VisionEncoder) -> TimmViTEncoder:
    """MoCo v3 ViT-B/16 from a local checkpoint path; tiny: a 2-layer width-32 timm ViT."""
    side = input_side(cfg.resolution, PATCH)
    if cfg.pretrained is None:
        model = seeded(lambda: VisionTransformer(
            img_size=side, patch_size=PATCH, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
            num_classes=0))
    else:
        arch, path = parse_mocov3_pretrained(cfg.pretrained)
        if not path.is_file():
            raise FileNotFoundError(
                f"mocov3 needs a local MoCo v3 checkpoint file ([timm_arch:]path), got {cfg.pretrained!r}")
        model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=side)
        load_mocov3(model, path)
    return TimmViTEncoder(model, cfg)
