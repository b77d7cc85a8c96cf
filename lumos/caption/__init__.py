"""Image captioning for T2I training data (supplement G.2: InternVL's detailed captions).

The captioner's names are exported lazily, so light submodules of this package do not pay for
importing torch and transformers.
"""

from __future__ import annotations

_EXPORTS = ("TINY_MODEL_ID", "CaptionSettings", "Captioner", "build_tiny_internvl", "resolve_dtype")
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        from lumos.caption import internvl

        return getattr(internvl, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
