"""Process settings that keep every run on loopback and quiet (DESIGN 6).

Applied with ``setdefault`` when :mod:`lumos` is imported, so a user's own values win.
"""

from __future__ import annotations

import os

LOOPBACK_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations (via img2dataset) queries PyPI at import
    "WANDB_MODE": "disabled",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",  # the demo (lumos demo): no usage reports, no version check
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray 2.60 turns token auth on by itself once ~/.ray/auth_token exists, but a client that was
    # not told so connects without the token and `ray start` heads refuse it: say it explicitly.
    "RAY_AUTH_MODE": "token",
    # The temporary Prefect server needs more than the default 20 s to start on 2 busy cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def apply_loopback_env() -> None:
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)



def shell_exports() -> str:
    """The same settings as shell ``export`` lines (a value already set wins)."""
    return "\n".join(f"export {k}=${{{k}:-{v}}}" for k, v in LOOPBACK_ENV.items())
