"""Serving the demo on loopback only: no share link, no telemetry (GRADIO_ANALYTICS_ENABLED is set
by lumos.env), no server-side rendering process, no MCP or PWA endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

HOST = "127.0.0.1"


def launch(app, port: int | None = None) -> str:
    """Start ``app`` at http://127.0.0.1:port/ (``None``: Gradio picks a free one) in background
    threads; returns the URL. ``app.block_thread()`` then serves until Ctrl-C, ``app.close()`` stops."""
    _, url, _ = app.launch(server_name=HOST, server_port=port, share=False, inbrowser=False,
                           prevent_thread_lock=True, ssr_mode=False, quiet=True, mcp_server=False,
                           pwa=False, footer_links=[])
    return url


@contextmanager
def running(app, port: int | None = None) -> Iterator[str]:
    """The demo served in this process while the block runs; closed afterwards."""
    url = launch(app, port)
    try:
        yield url
    finally:
        app.close()
