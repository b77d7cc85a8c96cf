"""The T2I text encoder named by ``text_encoder.name``: T5 (H.2) or CLIP's text tower (Fig. 11)."""

from __future__ import annotations

from lumos.config import TextEncoder


def build_text_encoder(cfg: TextEncoder, device: str = "cpu"):
    """texts -> (embeddings (B, L, d), mask (B, L)); ``cfg.pretrained`` None: a tiny random one."""
    if cfg.name == "clip":
        from lumos.encoders.clip_text import CLIPTextEncoder

        return CLIPTextEncoder.from_config(cfg, device)
    from lumos.encoders.t5 import T5TextEncoder

    return T5TextEncoder.from_config(cfg, device)
