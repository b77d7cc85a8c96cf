"""`prior: i2i | t2i | pixart-alpha | none | <path>` (Fig. 5, Tables 4-5): which checkpoint a
downstream task starts from, and how its weights are carried over (lumos.models.transfer).

A path is a run folder (its latest finished checkpoint) or one checkpoint folder, e.g. an
imported release (`lumos import-checkpoint`). `pixart-alpha` is the paper's T2I prior for NVS
and I2V (Tables 4-5): a diffusers PixArt-alpha transformer (hub name or local folder, param
`model.pixart_alpha`), converted once into this project's layout under models/priors/."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from lumos.models import CONDITION_PARAMETERS, ConditionedDiT, transfer_weights
from lumos.train.loop import latest_checkpoint

PRIOR_MODELS = {"i2i": Path("models/i2i"), "t2i": Path("models/t2i")}
PIXART_ALPHA = "pixart-alpha"
IMPORTED = Path("models/priors")


def t2i_final(models: Path = PRIOR_MODELS["t2i"]) -> Path | None:
    """The T2I prior is the last progressive stage's latest checkpoint."""
    stages = sorted((models / "stages").glob("stage-*"), key=lambda p: int(p.name.split("-")[1]))
    return latest_checkpoint(stages[-1]) if stages else None


def checkpoint_at(path: Path | str) -> Path:
    """A checkpoint folder given as itself or as its run folder (the latest finished one)."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"prior {str(path)!r}: neither a checkpoint nor a run folder with a "
                                "finished checkpoint (import one with `lumos import-checkpoint`)")
    return ckpt


def _tiny_pixart_alpha():
    """The tiny profile's stand-in: a seeded random transformer of PixArt-alpha's class and
    layout (learned variance, T5-wide captions) at the tiny variant's size."""
    from diffusers import PixArtTransformer2DModel

    from lumos.encoders.frozen import seeded
    from lumos.models import VARIANTS

    return seeded(lambda: PixArtTransformer2DModel(
        **VARIANTS["tiny"], in_channels=4, out_channels=8, sample_size=8, caption_channels=32,
        cross_attention_dim=VARIANTS["tiny"]["num_attention_heads"] * VARIANTS["tiny"]["attention_head_dim"],
        norm_type="ada_norm_single", use_additional_conditions=False))


def pixart_alpha_checkpoint(source: str | None, out: Path = IMPORTED / PIXART_ALPHA) -> Path:
    """PixArt-alpha's transformer (diffusers format: a hub name or a local folder, of a pipeline
    or of the transformer alone; None: the tiny random stand-in) in this project's layout;
    converted once per source."""
    from diffusers import PixArtTransformer2DModel

    from lumos.models.release import pixart_model_args, write_checkpoint

    done = latest_checkpoint(out)
    if done is not None and json.loads((done / "config.json").read_text()).get("source") == {"pixart_alpha": source}:
        return done
    if source is None:
        transformer = _tiny_pixart_alpha()
    else:
        local = Path(source)
        sub = "transformer" if (local / "transformer").is_dir() or not local.exists() else None
        transformer = PixArtTransformer2DModel.from_pretrained(source, subfolder=sub)
    state = {"transformer." + k: v for k, v in transformer.state_dict().items()}
    args = pixart_model_args(dict(transformer.config))
    with torch.device("meta"):  # the null condition: PixArt-alpha keeps it outside the transformer
        null = ConditionedDiT(**args).null_condition
    state["null_condition"] = torch.zeros(null.shape)  # re-initialised anyway: a text prior
    config = {"task": "t2i", "condition": "text", "model_class": "dit", "model_args": args,
              "source": {"pixart_alpha": source}}
    return write_checkpoint(state, config, out)


def prior_checkpoint(prior: str, roots: dict[str, Path] | None = None,
                     pixart_alpha: str | None = None) -> Path | None:
    """The parent checkpoint of ``prior`` (None for ``none``); a missing one is an error."""
    if prior == "none":
        return None
    if prior == PIXART_ALPHA:
        return pixart_alpha_checkpoint(pixart_alpha, (roots or {}).get(PIXART_ALPHA, IMPORTED / PIXART_ALPHA))
    roots = {**PRIOR_MODELS, **(roots or {})}
    if prior not in roots:
        if "/" in prior or Path(prior).exists():
            return checkpoint_at(prior)
        raise ValueError(f"unknown prior {prior!r}: use i2i, t2i, pixart-alpha, none or a checkpoint path")
    ckpt = t2i_final(roots["t2i"]) if prior == "t2i" else latest_checkpoint(roots[prior])
    if ckpt is None:
        raise FileNotFoundError(f"prior {prior!r}: no finished checkpoint under {roots[prior]}: train it first")
    return ckpt


def condition_kind(config: dict) -> str:
    """What a checkpoint's condition tokens come from: text (T5) or vision (DINO & co.)."""
    return config.get("condition") or ("text" if config.get("task") == "t2i" else "vision")


def parent_weights(checkpoint: Path | str) -> dict[str, torch.Tensor]:
    """The parent's weights with its EMA parameters over them (what its samples use)."""
    ckpt = Path(checkpoint)
    state = load_file(str(ckpt / "model.safetensors"))
    state.update(load_file(str(ckpt / "ema.safetensors")))
    return state


def init_from(model: nn.Module, checkpoint: Path | str | None, condition: str) -> dict:
    """Initialise ``model`` from a parent checkpoint; the condition projection is re-initialised
    when the parent's condition encoder differs (DINO <-> T5). Returns the transfer report."""
    if checkpoint is None:
        return {"copied": [], "widened": [], "initialised": ["*"]}
    config = json.loads((Path(checkpoint) / "config.json").read_text())
    parent = config.get("model_args", {}).get("backbone", "pixart")  # older checkpoints: PixArt
    own = getattr(model, "backbone", parent)
    if parent != own:
        raise ValueError(f"prior {checkpoint} is a {parent!r} model, this one a {own!r}: set model.backbone: {parent}")
    reinit = CONDITION_PARAMETERS if condition_kind(config) != condition else ()
    return transfer_weights(parent_weights(checkpoint), model, reinit)
