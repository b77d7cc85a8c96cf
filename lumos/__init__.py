"""Lumos: learning visual generative priors without text (CVPR 2025), as a platform."""

from lumos.env import apply_loopback_env

apply_loopback_env()

__version__ = "0.1.0"
