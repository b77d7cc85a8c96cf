"""Serving the demo on loopback only: no share link, no telemetry (GRADIO_ANALYTICS_ENABLED is set
by lumos.env), no server-side rendering process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

HOST = "127.0.0.1"


def launch(app, port: int | None = None, block: bool = True) -> str:
    """Start ``app`` at http://127.0.0.1:port/ (``None``: Gradio picks a free one); returns the URL.
    With ``block`` it serves until interrupted."""
    _, url, _ = app.launch(server_name=HOST, server_port=port, share=False, inbrowser=False,
                           prevent_thread_lock=True, ssr_mode=False, quiet=True, mcp_server=False,
                           pwa=False, footer_links=[])
    if block:
        app.block_thread()  # returns on Ctrl-C, after closing the server
    return url


@contextmanager
def running(app, port: int | None = None) -> Iterator[str]:
    """The demo served in this process while the block runs; closed afterwards."""
    url = launch(app, port, block=False)
    try:
        yield url
    finally:
        app.close()
