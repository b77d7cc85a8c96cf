"""The text-image set's stages (supplement G.2, H.2): T2I subset -> captions -> T5 cache.

    datasets/t2i/subset/     subset.parquet + stats.json (the versioned T2I index)
    datasets/t2i/captions/   parts/<shard>.parquet, captions.parquet (keyed by uid)
    datasets/features/t5/    T5 embeddings of raw and long captions, per shard
"""

from __future__ import annotations

from pathlib import Path

from lumos.caption.captions import caption_subset
from lumos.caption.subset import select_t2i
from lumos.config import Profile
from lumos.curation.catalog import CAPTIONS, DEFAULT_CATALOG, T2I_SUBSET
from lumos.data.text_features import extract_text_features
from lumos.encoders.text import build_text_encoder

SUBSET_DIR, CAPTIONS_DIR, T5_DIR = T2I_SUBSET.parent, CAPTIONS.parent, Path("datasets/features/t5")


def run_subset(profile: Profile, catalog: Path = DEFAULT_CATALOG) -> dict:
    return select_t2i(catalog, profile.t2i_data, SUBSET_DIR)


def build_captioner(profile: Profile):
    from lumos.caption.internvl import CaptionSettings, Captioner

    return Captioner(CaptionSettings(**profile.captioner.model_dump()))


def run_caption(profile: Profile, stop_after: int | None = None) -> dict:
    return caption_subset(T2I_SUBSET, CAPTIONS_DIR, build_captioner(profile), stop_after=stop_after)


def run_text_features(profile: Profile) -> dict:
    t = profile.text_encoder
    encoder = build_text_encoder(t)
    fingerprint = {"text_encoder": t.model_dump(), "model": encoder.name}
    return extract_text_features(T2I_SUBSET, CAPTIONS, T5_DIR, encoder, batch_size=64,
                                 precision=t.precision, fingerprint=fingerprint,
                                 caption_noise=profile.t2i_data.caption_noise, noise_seed=profile.t2i_data.seed)
