"""The text-image set's stages (supplement G.2, H.2): T2I subset -> captions -> T5 cache.

    datasets/t2i/subset/     subset.parquet + stats.json (the versioned T2I index)
    datasets/t2i/captions/   parts/<shard>.parquet, captions.parquet (keyed by uid)
    datasets/features/t5/    T5 embeddings of raw and long captions, per shard
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from lumos.caption.captions import caption_subset
from lumos.caption.subset import select_t2i
from lumos.config import Profile
from lumos.curation.catalog import CAPTIONS, DEFAULT_CATALOG, T2I_SUBSET
from lumos.data.text_features import extract_text_features
from lumos.encoders.text import build_text_encoder
from lumos.runtime import storage
from lumos.runtime.device import resolve_device
from lumos.runtime.ray import model_gpus

SUBSET_DIR, CAPTIONS_DIR = T2I_SUBSET.parent, CAPTIONS.parent
T5_DIR = Path("datasets/features/t5")  # the default of storage.features + /t5


def run_subset(profile: Profile, catalog: Path = DEFAULT_CATALOG) -> dict:
    return select_t2i(catalog, profile.t2i_data, SUBSET_DIR)


def caption_settings(profile: Profile):
    from lumos.caption.internvl import CaptionSettings

    return CaptionSettings(**profile.captioner.model_dump())


def build_captioner(profile: Profile, device: str = "auto"):
    from lumos.caption.internvl import Captioner

    return Captioner(caption_settings(profile), resolve_device(device))


def captions_location(profile: Profile) -> str:
    """The caption stage's root (params ``storage.captions``): a folder or a bucket."""
    return profile.storage.captions


def run_caption(profile: Profile, stop_after: int | None = None, on_shard=None) -> dict:
    """Captions on Ray (params ``ray``), on the params' device in captioner.precision."""
    from lumos.caption.internvl import Captioner, provenance

    settings = caption_settings(profile)
    ray = profile.ray
    # the device the workers will run on: the GPU when the params allow one and Ray has one
    worker_device = "cuda" if model_gpus(ray, profile.device) else "cpu"
    return caption_subset(T2I_SUBSET, captions_location(profile), stop_after=stop_after,
                          build=partial(Captioner, settings, worker_device),
                          generation=provenance(settings, worker_device),
                          decode_batch=ray.decode_batch,
                          device=profile.device, ray=ray, on_shard=on_shard)


def t5_location(profile: Profile) -> str:
    """The T5 cache (params ``storage.features``/t5): a folder or a bucket."""
    return f"{profile.storage.features.rstrip('/')}/t5"


def run_text_features(profile: Profile, on_shard=None) -> dict:
    """The T5 cache on Ray (params ``ray``), on the params' device in text_encoder.precision."""
    t = profile.text_encoder
    worker_device = "cuda" if model_gpus(profile.ray, profile.device) else "cpu"
    name = t.pretrained or f"lumos-tiny-{t.name}"  # what the encoder's .name reports
    fingerprint = {"text_encoder": t.model_dump(), "model": name}
    captions = storage.join(captions_location(profile), "captions.parquet")
    return extract_text_features(T2I_SUBSET, captions, t5_location(profile), batch_size=64, precision=t.precision,
                                 fingerprint=fingerprint, build=partial(build_text_encoder, t, worker_device),
                                 device=profile.device, ray=profile.ray, on_shard=on_shard,
                                 caption_noise=profile.t2i_data.caption_noise, noise_seed=profile.t2i_data.seed)
