"""Batched image captioning with InternVL (supplement G.2: T2I captions are InternVL's long,
detailed descriptions), on transformers' native ``InternVLForConditionalGeneration`` +
``InternVLProcessor`` (no ``trust_remote_code``).

``CaptionSettings.model`` names a converted ``-hf`` checkpoint (e.g. ``OpenGVLab/InternVL3-1B-hf``)
or a local copy of one; ``None`` builds a tiny random InternVL (seed 0, tokenizer made in memory,
see :mod:`lumos.caption.tiny_tokenizer`) that runs offline through exactly the same code path:
chat template -> processor (image tokens expanded, one 448/64 px tile per image unless
``crop_to_patches``) -> left-padded batch -> ``generate`` -> decode of the new tokens only.
A random model writes gibberish from its small vocabulary; that is expected.

Precision (``CaptionSettings.precision``) resolves to a torch dtype as follows:

- on CUDA: ``fp32``/``fp16``/``bf16`` are used as given;
- on CPU: ``fp16`` falls back to ``fp32`` (half kernels on CPU are slow or missing),
  ``bf16`` is honoured (it is what the setting asks for, and matches a GPU run's numerics more
  closely; set ``precision: fp32`` for full-precision CPU runs), ``fp32`` is ``fp32``.

The resolved dtype is part of :meth:`Captioner.generation_config`, the provenance record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from PIL import Image

TINY_MODEL_ID = "lumos-tiny-internvl"
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Tiny random InternVL: 64 px tiles, 8 px patches -> 8x8 = 64 patches, pixel-shuffled by
# downsample_ratio 0.5 -> 16 image tokens per tile (image_seq_length).
TINY_IMAGE_SIZE = 64
TINY_PATCH_SIZE = 8
TINY_DOWNSAMPLE_RATIO = 0.5
TINY_IMAGE_SEQ_LENGTH = int((TINY_IMAGE_SIZE // TINY_PATCH_SIZE) ** 2 * TINY_DOWNSAMPLE_RATIO**2)
# Weights drawn wider than transformers' default 0.02 so that the random model's greedy output
# varies with the image and over time, instead of repeating a single token.
TINY_INIT_RANGE = 0.2
TINY_SEED = 0


@dataclass(frozen=True)
class CaptionSettings:
    """What to caption with and how; mirrored by the project config."""

    model: str | None = None  # hub name / local path of an InternVL "-hf" checkpoint; None -> tiny random
    prompt: str = "Describe this image in detail."
    max_new_tokens: int = 256
    batch_size: int = 8
    do_sample: bool = False
    num_beams: int = 1
    precision: str = "bf16"  # fp32 | fp16 | bf16 (see the module docstring for CPU)
    crop_to_patches: bool = False  # False: one tile per image; True: InternVL's dynamic tiling
    seed: int = 0  # seeds sampling (do_sample=True) once per caption() call

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        for name in ("max_new_tokens", "batch_size", "num_beams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def resolve_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """``precision`` -> torch dtype on ``device`` (fp16 falls back to fp32 on CPU)."""
    dtype = PRECISIONS[precision]
    if torch.device(device).type == "cpu" and dtype == torch.float16:
        return torch.float32
    return dtype


def build_tiny_internvl(seed: int = TINY_SEED):
    """(model, processor) for a tiny random InternVL built offline; same seed -> same weights."""
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor, InternVLVideoProcessor)

    from lumos.caption.tiny_tokenizer import TINY_CHAT_TEMPLATE, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    size = {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        video_processor=InternVLVideoProcessor(size=size),  # required by the processor, unused
        tokenizer=tokenizer,
        image_seq_length=TINY_IMAGE_SEQ_LENGTH,
        chat_template=TINY_CHAT_TEMPLATE,
    )
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=TINY_IMAGE_SIZE, patch_size=TINY_PATCH_SIZE,
                           initializer_range=TINY_INIT_RANGE),
        text_config=dict(model_type="qwen2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, vocab_size=len(tokenizer),
                         max_position_embeddings=4096, initializer_range=TINY_INIT_RANGE,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=TINY_IMAGE_SEQ_LENGTH,
        downsample_ratio=TINY_DOWNSAMPLE_RATIO,
        initializer_range=TINY_INIT_RANGE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config)
    # What a real checkpoint's generation_config.json provides.
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


class Captioner:
    """images -> one detailed caption each, generated in batches of ``settings.batch_size``."""

    def __init__(self, settings: CaptionSettings, device: str | None = None) -> None:
        from transformers import InternVLForConditionalGeneration, InternVLProcessor

        self.settings = settings
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = resolve_dtype(settings.precision, self.device)
        if settings.model is None:
            model, processor = build_tiny_internvl()
            self.model_id = TINY_MODEL_ID
        else:
            processor = InternVLProcessor.from_pretrained(settings.model)
            model = InternVLForConditionalGeneration.from_pretrained(settings.model, dtype=self.dtype)
            self.model_id = settings.model
        processor.tokenizer.padding_side = "left"  # generation continues from the right edge
        self.processor = processor
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.prompt_text = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": settings.prompt}]}],
            add_generation_prompt=True, tokenize=False)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_seq_length(self) -> int:
        """Context image tokens per tile."""
        return self.processor.image_seq_length

    def inputs(self, images: list[Image.Image]):
        """The model inputs for one batch: chat prompt + image tokens, left-padded, on device."""
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        batch = self.processor(images=images, text=[self.prompt_text] * len(images), padding=True,
                               crop_to_patches=self.settings.crop_to_patches, return_tensors="pt")
        batch = batch.to(self.device)
        batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return batch

    def generate_ids(self, images: list[Image.Image]) -> list[torch.Tensor]:
        """The newly generated token ids of each image (eos/pad included), batched, in order."""
        s = self.settings
        gen = self.model.generation_config
        pad = gen.pad_token_id if gen.pad_token_id is not None else self.tokenizer.pad_token_id
        kwargs = dict(max_new_tokens=s.max_new_tokens, do_sample=s.do_sample, num_beams=s.num_beams,
                      pad_token_id=pad)
        if gen.eos_token_id is None:
            kwargs["eos_token_id"] = self.tokenizer.eos_token_id
        out: list[torch.Tensor] = []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(s.seed)
            for start in range(0, len(images), s.batch_size):
                batch = self.inputs(images[start:start + s.batch_size])
                ids = self.model.generate(**batch, **kwargs)
                out.extend(ids[:, batch["input_ids"].shape[1]:].cpu())
        return out

    def caption(self, images: list[Image.Image]) -> list[str]:
        """One stripped caption per image, in order."""
        images = list(images)
        if not images:
            return []
        new_ids = self.generate_ids(images)
        texts = self.processor.batch_decode([t.tolist() for t in new_ids], skip_special_tokens=True)
        return [t.strip() for t in texts]

    def generation_config(self) -> dict:
        """Everything that determines the captions (not batch size or device), for provenance."""
        return provenance(self.settings, self.device, self.image_seq_length)


def provenance(settings: CaptionSettings, device: str | torch.device,
               image_seq_length: int | None = None) -> dict:
    """What :meth:`Captioner.generation_config` records, without building the model: what a
    caption stage compares finished parts against before any worker loads InternVL."""
    import transformers

    if image_seq_length is None:
        if settings.model is None:
            image_seq_length = TINY_IMAGE_SEQ_LENGTH
        else:
            from transformers import InternVLProcessor

            image_seq_length = InternVLProcessor.from_pretrained(settings.model).image_seq_length
    s = asdict(settings)
    s.pop("batch_size")
    model_id = s.pop("model") or TINY_MODEL_ID
    dtype = resolve_dtype(settings.precision, device)
    return {"model_id": model_id, **s, "dtype": str(dtype).removeprefix("torch."),
            "image_seq_length": image_seq_length, "transformers": transformers.__version__}
