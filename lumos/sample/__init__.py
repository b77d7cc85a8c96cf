"""Sampling from trained models: I2I variations and interpolations (supplement I.4)."""
