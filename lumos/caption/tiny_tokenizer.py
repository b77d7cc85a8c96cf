"""An in-memory tokenizer for the tiny random InternVL captioner (no files, no downloads).

A word-level vocabulary of simple caption words (the mini-world's colours, shapes, sizes and
positions plus common English glue words and punctuation), lower-cased, split on whitespace and
punctuation. It carries the special tokens that transformers' native ``InternVLProcessor`` reads
(``start_image_token``/``end_image_token``/``context_image_token``/``video_token`` and their
``*_id``), named exactly as in the real ``OpenGVLab/InternVL3-*-hf`` Qwen2 tokenizers, and a
ChatML chat template of the same shape as theirs: an image content item renders the context
image token (``<IMG_CONTEXT>``), which the processor expands to
``<img>`` + ``<IMG_CONTEXT>`` x image_seq_length x tiles + ``</img>``.

Words outside the vocabulary encode to ``<unk>`` (a special token, dropped on decode).
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
START_IMAGE, END_IMAGE = "<img>", "</img>"
CONTEXT_IMAGE, VIDEO = "<IMG_CONTEXT>", "<video>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, START_IMAGE, END_IMAGE, CONTEXT_IMAGE, VIDEO, UNK_TOKEN)

# Kept literal (not imported from lumos.demo.scenes) so the tiny model's vocabulary, and hence
# its random weights and outputs, do not move when the mini-world's word lists change.
TINY_WORDS: tuple[str, ...] = tuple(dict.fromkeys("""
    user assistant system
    a an the this that these there is are it its of in on at with and or to from by
    image photo picture scene shape shapes object objects background foreground
    describe detail detailed shows showing contains containing
    red green blue yellow purple orange white black gray grey beige teal pink brown
    circle square triangle diamond ellipse rectangle line
    plain striped stripes checkered checker dotted dots gradient textured
    small medium large big tiny
    top middle bottom left center centre right upper lower corner side
    one two three four five six seven eight
    . , : ; ! ? - ' "
""".split()))

# ChatML, like the InternVL3 (Qwen2-based) checkpoints' template, trimmed to what captioning needs.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny captioner's tokenizer: specials first (ids 0..7), then ``TINY_WORDS``."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + TINY_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        extra_special_tokens={
            "start_image_token": START_IMAGE,
            "end_image_token": END_IMAGE,
            "context_image_token": CONTEXT_IMAGE,
            "video_token": VIDEO,
        },
        chat_template=TINY_CHAT_TEMPLATE,
        padding_side="left",
    )
