"""Prefect flows: thin wrappers that read params, call lumos, and report."""
