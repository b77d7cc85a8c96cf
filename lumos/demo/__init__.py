"""The embedded mini-world: deterministic procedural data for the tiny profile and the tests."""

from lumos.demo.server import serve_directory, serve_mini_world
from lumos.demo.world import BAD_KINDS, DEFAULT_OUT, LAION_SCHEMA, build_mini_world

__all__ = ["BAD_KINDS", "DEFAULT_OUT", "LAION_SCHEMA", "build_mini_world", "serve_directory", "serve_mini_world"]
