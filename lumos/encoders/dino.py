"""DINO (ViT-B/16, the paper's tau_img, 4.1) and DINOv2 from transformers.

Tokens are ``last_hidden_state`` (after the final LayerNorm): [CLS] at index 0, then any
register tokens (DINOv2 with registers; dropped), then the patch grid. The [CLS] token is
L2-normalised when ``vision_encoder.normalize_cls`` (on by default, as the released Lumos
code feeds DINO's CLS to the model).
"""

from __future__ import annotations

import torch
from transformers import (AutoConfig, Dinov2Config, Dinov2Model, Dinov2WithRegistersModel,
                          PreTrainedModel, ViTConfig, ViTModel)

from lumos.config import VisionEncoder
from lumos.encoders.frozen import seeded
from lumos.encoders.vision import (ENCODERS, IMAGENET_MEAN, IMAGENET_STD, VisionTokenEncoder,
                                   input_side)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


class HFViTEncoder(VisionTokenEncoder):
    """A transformers ViT-family model (``ViTModel``, ``Dinov2Model`` and its register variant)."""

    def __init__(self, model: PreTrainedModel, cfg: VisionEncoder, family: str) -> None:
        c = model.config
        super().__init__(model, cfg, width=c.hidden_size, patch_size=c.patch_size,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.family = family
        self.num_registers = int(getattr(c, "num_register_tokens", 0) or 0)
        # ViTModel only resizes its position embeddings when asked (DINOv2 always does).
        self._interpolate = family == "dino" and self.input_size != c.image_size

    def _features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        h = self.backbone(pixel_values=pixels, **kwargs).last_hidden_state
        cls = h[:, :1]
        if getattr(self.cfg, "normalize_cls", False):
            cls = torch.nn.functional.normalize(cls, dim=-1)
        return cls, h[:, 1 + self.num_registers:]


@ENCODERS.register("dino")
def build_dino(cfg: VisionEncoder) -> HFViTEncoder:
    """DINO ViT (``facebook/dino-vitb16``); tiny: a 2-layer width-32 ``ViTModel``, patch 16."""
    if cfg.pretrained is None:
        config = ViTConfig(**TINY, patch_size=16, image_size=input_side(cfg.resolution, 16))
        model = seeded(lambda: ViTModel(config, add_pooling_layer=False))
    else:
        model = ViTModel.from_pretrained(cfg.pretrained, add_pooling_layer=False)
    return HFViTEncoder(model, cfg, "dino")


@ENCODERS.register("dinov2")
def build_dinov2(cfg: VisionEncoder) -> HFViTEncoder:
    """DINOv2 (``facebook/dinov2-base``, or a ``-with-registers`` checkpoint); tiny: patch 14."""
    if cfg.pretrained is None:
        config = Dinov2Config(**TINY, patch_size=14, image_size=input_side(cfg.resolution, 14))
        model = seeded(lambda: Dinov2Model(config))
    else:
        model_type = AutoConfig.from_pretrained(cfg.pretrained).model_type
        classes = {"dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel}
        if model_type not in classes:
            raise ValueError(f"{cfg.pretrained!r} is a {model_type!r} model, not DINOv2")
        model = classes[model_type].from_pretrained(cfg.pretrained)
    return HFViTEncoder(model, cfg, "dinov2")
