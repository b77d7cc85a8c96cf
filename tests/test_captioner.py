"""The InternVL captioner (supplement G.2) on its tiny random model: batching, order,
determinism, generation bounds, image-token insertion and the from_pretrained path."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from lumos.caption import TINY_MODEL_ID, Captioner, CaptionSettings, build_tiny_internvl, resolve_dtype

SETTINGS = CaptionSettings(model=None, max_new_tokens=8, batch_size=2, precision="fp32")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from intra-op threads, and on 2 shared, busy cores their spin
    waits make these tests ~6x slower (30 s instead of 5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> Captioner:
    return Captioner(SETTINGS, device="cpu")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Three images of different sizes, modes and content."""
    noise = np.random.default_rng(0).integers(0, 256, (90, 50, 3), dtype=np.uint8)
    return [Image.new("RGB", (40, 30), (220, 40, 40)),
            Image.new("L", (120, 64), 200),
            Image.fromarray(noise)]


def test_one_stripped_string_per_image_in_order(tiny, images):
    captions = tiny.caption(images)  # batch_size 2: a full batch and a remainder of one
    assert len(captions) == len(images)
    assert all(isinstance(c, str) and c and c == c.strip() for c in captions)
    # The image reaches the language model: different images, different captions.
    assert len(set(captions)) == len(images)
    # Order: each caption is the one that image gets alone, and reversing the input reverses it.
    assert [tiny.caption([im])[0] for im in images] == captions
    assert tiny.caption(images[::-1]) == captions[::-1]
    assert tiny.caption([]) == []


def test_deterministic(tiny, images):
    again = Captioner(SETTINGS, device="cpu")  # the tiny model is rebuilt from seed 0
    assert again.caption(images) == tiny.caption(images) == tiny.caption(images)
    for a, b in zip(again.model.state_dict().values(), tiny.model.state_dict().values()):
        assert torch.equal(a, b)


def test_batch_size_does_not_change_captions(tiny, images):
    # One tile per image -> every prompt has the same length, so no padding at all.
    one = Captioner(replace(SETTINGS, batch_size=1), device="cpu").caption(images)
    three = Captioner(replace(SETTINGS, batch_size=3), device="cpu").caption(images)
    assert one == three == tiny.caption(images)


def test_left_padding_does_not_change_captions(images):
    # Dynamic tiling gives the images different tile counts, so batched prompts really are
    # left-padded; masked padding must leave greedy captions exactly as unbatched ones.
    tiled = replace(SETTINGS, crop_to_patches=True)
    batched = Captioner(replace(tiled, batch_size=3), device="cpu")
    batch = batched.inputs(images)
    assert batch["attention_mask"].shape[0] == 3
    assert (batch["attention_mask"] == 0).any()
    assert (batch["attention_mask"][:, -1] == 1).all()  # padding is on the left
    single = Captioner(replace(tiled, batch_size=1), device="cpu").caption(images)
    assert batched.caption(images) == single


def test_generation_config_is_provenance(tiny):
    cfg = tiny.generation_config()
    assert cfg["model_id"] == TINY_MODEL_ID == tiny.model_id
    assert cfg["prompt"] == SETTINGS.prompt
    assert cfg["max_new_tokens"] == 8
    assert cfg["do_sample"] is False and cfg["num_beams"] == 1
    assert cfg["dtype"] == "float32" and cfg["image_seq_length"] == 16
    assert "batch_size" not in cfg  # batching does not change captions
    other = Captioner(replace(SETTINGS, prompt="Describe this image."), device="cpu")
    assert other.generation_config()["prompt"] == "Describe this image."


def test_max_new_tokens_bounds_caption_length(tiny, images):
    long = tiny.caption(images)
    for n in (1, 3):
        short = Captioner(replace(SETTINGS, max_new_tokens=n), device="cpu")
        assert all(len(ids) <= n for ids in short.generate_ids(images))
        captions = short.caption(images)
        assert all(len(tiny.tokenizer(c, add_special_tokens=False).input_ids) <= n for c in captions)
        # Greedy decoding: a shorter budget gives a prefix of the longer caption.
        assert all(l.startswith(s) for s, l in zip(captions, long))
    assert max(len(tiny.tokenizer(c).input_ids) for c in long) > 3


def test_processor_inserts_image_tokens(tiny, images):
    tok = tiny.tokenizer
    assert tiny.prompt_text.count(tok.context_image_token) == 1
    assert SETTINGS.prompt in tiny.prompt_text
    batch = tiny.inputs(images)
    n = tiny.image_seq_length
    config = tiny.model.config
    assert n == (config.vision_config.image_size[0] // config.vision_config.patch_size[0]) ** 2 \
        * config.downsample_ratio ** 2 == 16
    assert config.image_token_id == tok.context_image_token_id
    ids = batch["input_ids"]
    assert ids.shape[0] == 3
    assert ((ids == tok.context_image_token_id).sum(1) == n).all()
    assert ((ids == tok.start_image_token_id).sum(1) == 1).all()
    assert ((ids == tok.end_image_token_id).sum(1) == 1).all()
    assert tuple(batch["pixel_values"].shape) == (3, 3, 64, 64)  # one tile per image


def test_precision_resolution():
    assert resolve_dtype("fp16", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("fp32", "cpu") == torch.float32
    assert resolve_dtype("fp16", "cuda") == torch.float16
    assert resolve_dtype("bf16", "cuda") == torch.bfloat16
    with pytest.raises(ValueError):
        CaptionSettings(model=None, precision="fp8")
    with pytest.raises(ValueError):
        CaptionSettings(model=None, batch_size=0)


def test_default_precision_runs_bf16_on_cpu(images):
    captioner = Captioner(CaptionSettings(model=None, max_new_tokens=4), device="cpu")
    assert captioner.model.dtype == torch.bfloat16
    assert captioner.generation_config()["dtype"] == "bfloat16"
    captions = captioner.caption(images)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)


def test_from_pretrained_path_matches_in_memory_model(tiny, images, tmp_path):
    model, processor = build_tiny_internvl()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = Captioner(replace(SETTINGS, model=str(tmp_path)), device="cpu")
    assert loaded.model_id == str(tmp_path) == loaded.generation_config()["model_id"]
    assert loaded.prompt_text == tiny.prompt_text
    assert loaded.caption(images) == tiny.caption(images)


def test_sampling_is_seeded(images):
    sampled = replace(SETTINGS, do_sample=True, seed=3)
    a = Captioner(sampled, device="cpu").caption(images)
    assert a == Captioner(sampled, device="cpu").caption(images)
    assert len(a) == 3 and all(isinstance(c, str) for c in a)
