"""Readers and writers of cached training data."""
