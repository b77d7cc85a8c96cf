"""CLIP's text tower as the T2I text encoder (Fig. 11: T5 vs CLIP), from open_clip.

``text_encoder.pretrained`` names model and weights as the vision side does (``"ViT-L-14:openai"``,
``"ARCH:/path/ckpt.pt"``, ``"hf-hub:org/repo"``; None: the random ``lumos-tiny-clip``). The
tokens are the last block's outputs after ``ln_final``, before pooling and projection (as
Stable Diffusion conditions on CLIP), padded to ``min(max_length, context_length)`` (77 for
CLIP); the mask is 1 on the prompt's tokens (start, words, end) and 0 on padding.
"""

from __future__ import annotations

import open_clip
import torch

from lumos.config import TextEncoder
from lumos.encoders.clip import parse_clip_pretrained
from lumos.encoders.frozen import Frozen, seeded


class CLIPTextEncoder(Frozen):
    """texts -> (token embeddings (B, L, width), attention mask (B, L)), like T5TextEncoder."""

    def __init__(self, model: open_clip.CLIP, tokenizer, max_length: int, name: str) -> None:
        super().__init__()
        if not hasattr(model, "token_embedding"):
            raise ValueError(f"{name}: clip needs an open_clip CLIP with its own text transformer")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_length = min(max_length, int(model.positional_embedding.shape[0]))
        self.freeze()

    @classmethod
    def from_config(cls, cfg: TextEncoder, device: str = "cpu") -> CLIPTextEncoder:
        name, weights = parse_clip_pretrained(cfg.pretrained)
        model = seeded(lambda: open_clip.create_model(name, pretrained=weights))
        model.visual = None  # the image tower is not needed
        return cls(model.to(device), open_clip.get_tokenizer(name), cfg.max_length,
                   cfg.pretrained or name)

    @property
    def width(self) -> int:
        return int(self.model.token_embedding.embedding_dim)

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        ids = self.tokenizer(texts).to(m.token_embedding.weight.device)  # (B, context), 0-padded
        x = m.token_embedding(ids) + m.positional_embedding  # open_clip's encode_text, unpooled
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        return x[:, : self.max_length], (ids[:, : self.max_length] != 0).long()
