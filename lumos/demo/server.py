"""A static HTTP server on loopback that hands out the mini-world like a web host would.

Used by the stages and tests that download from the mini-world's URLs (never the internet).
The handler is the standard library's: missing files answer 404, and a ``.jpg`` that holds
HTML is still served as ``image/jpeg`` (that is one of the mini-world's bad rows).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass


def parse_base_url(base_url: str) -> tuple[str, int]:
    """``http://127.0.0.1:8765`` -> ("127.0.0.1", 8765)."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"base_url must look like http://127.0.0.1:PORT, got {base_url!r}")
    return parts.hostname, parts.port or 80


@contextmanager
def serve_directory(root: Path | str, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``root`` on ``host:port`` (0 picks a free port) in a thread; yields the base URL.

    The server is shut down and its socket closed when the block exits, even on error.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"nothing to serve: {root} is not a directory")
    handler = functools.partial(_QuietHandler, directory=str(root))
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as err:
        raise OSError(f"cannot serve {root} on {host}:{port}: {err.strerror}") from err
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"serve:{root}", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def serve_mini_world(root: Path | str, base_url: str) -> Iterator[str]:
    """Serve a built mini-world at the address its metadata URLs point to."""
    host, port = parse_base_url(base_url)
    with serve_directory(root, host, port) as url:
        yield url
