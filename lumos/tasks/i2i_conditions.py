"""What the prior of Fig. 8 is pre-trained on (``train.condition``): the image's encoder tokens
(Lumos-I2I), its class (a class-to-image prior, as PixArt-alpha's ImageNet pre-training) or
nothing (an unconditional prior). All three read the same feature cache; ``train.sources``
restricts them to some catalog sources (Fig. 8: ImageNet-1K only).

A class is the folder an image sits in, ImageNet's ``train/<wnid>/<file>`` layout (the
mini-world's ImageNet-style source has it too). It enters the DiT as a one-hot token, so the
condition projection is a learned label-embedding table (DiT's LabelEmbedder) and the null
condition its dropped-label row.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import torch

from lumos.curation.catalog import query

CONDITIONS = ("image", "class", "none")


def class_of(url: str) -> str:
    """``.../train/n01440764/n01440764_00001.JPEG`` -> ``n01440764``: the image's folder."""
    parent = PurePosixPath(urlparse(url).path).parent.name
    if not parent:
        raise ValueError(f"{url!r} is not in a class folder (ImageNet's train/<class>/<file> layout)")
    return parent


def catalog_labels(catalog: Path | str, sources: list[str] | None, by_class: bool
                   ) -> tuple[dict[str, int] | None, list[str]]:
    """(key -> class index, class names) of the catalog's images of ``sources`` (all: None);
    without ``by_class`` every key gets 0. (None, []) when nothing restricts or labels."""
    if sources is None and not by_class:
        return None, []
    where = "" if sources is None else "WHERE source IN (" + ", ".join(
        "'" + s.replace("'", "''") + "'" for s in sources) + ")"
    rows = query(f"SELECT key, url FROM images {where} ORDER BY key", catalog).fetchall()
    if not rows:
        raise ValueError(f"the catalog {catalog} has no images of sources {sources}")
    if not by_class:
        return {key: 0 for key, _ in rows}, []
    names = sorted({class_of(url) for _, url in rows})
    index = {name: i for i, name in enumerate(names)}
    return {key: index[class_of(url)] for key, url in rows}, names


def condition_tokens(condition: str, batch: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """The (B,M,d) condition of a batch: the cached encoder tokens, or the one-hot class."""
    if condition == "class":
        return torch.nn.functional.one_hot(batch["label"], num_classes).to(batch["latent_mean"].dtype)[:, None]
    return batch["condition"]
