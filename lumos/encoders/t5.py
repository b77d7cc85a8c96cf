"""The frozen text encoder of T2I (supplement H.2): Flan-T5-XXL, 120 tokens, mask kept.

Real weights load by hub name or local path; the tiny profile builds a small random
`T5EncoderModel` with a tokenizer made in memory from the mini-world's caption words, so the
same code runs offline.
"""

from __future__ import annotations

import torch
from transformers import AutoTokenizer, T5Config, T5EncoderModel, T5Tokenizer

from lumos.config import TextEncoder
from lumos.demo.scenes import BACKGROUND_COLOURS, COLOURS, NUMBER_WORDS, ROWS, COLS, SHAPES, SIZES
from lumos.encoders.frozen import Frozen, seeded

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_WORDS = ("a an the and at on of in with this image shape shapes background plain striped "
          "checkered dotted gradient describe detail photo picture").split()


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A Unigram tokenizer over the mini-world's words plus single letters (so any text encodes)."""
    words = list(dict.fromkeys(
        _WORDS + list(COLOURS) + list(BACKGROUND_COLOURS) + list(SHAPES) + list(SIZES)
        + list(ROWS) + list(COLS) + list(NUMBER_WORDS.values())))
    pieces = ["<pad>", "</s>", "<unk>"] + [f"\u2581{w}" for w in words]
    pieces += [f"\u2581{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789,.:;-")
    vocab = [(p, 0.0 if i < 3 else -1.0 - 0.01 * i) for i, p in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


class T5TextEncoder(Frozen):
    """texts -> (embeddings (B, L, d), attention mask (B, L)), padded to ``max_length``."""

    def __init__(self, model: T5EncoderModel, tokenizer, max_length: int, name: str) -> None:
        super().__init__()
        self.model, self.tokenizer, self.max_length, self.name = model, tokenizer, max_length, name
        self.freeze()

    @classmethod
    def from_config(cls, cfg: TextEncoder, device: str = "cpu") -> T5TextEncoder:
        if cfg.pretrained:
            dtype = _DTYPES[cfg.precision] if device != "cpu" else torch.float32
            model = T5EncoderModel.from_pretrained(cfg.pretrained, torch_dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(cfg.pretrained)
            name = cfg.pretrained
        else:
            tokenizer = tiny_t5_tokenizer()
            config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                              num_heads=4, feed_forward_proj="gated-gelu")
            model = seeded(lambda: T5EncoderModel(config))
            name = "lumos-tiny-t5"
        return cls(model.to(device), tokenizer, cfg.max_length, name)

    @property
    def width(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt").to(self.model.device)
        out = self.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).last_hidden_state
        return out, enc.attention_mask
