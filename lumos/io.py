"""Atomic writes: every output appears whole or not at all (write, then rename)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def copy_to_parquet(con, query: str, path: Path | str) -> None:
    """DuckDB ``COPY (query)`` to a parquet file through a temporary sibling, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    con.execute(f"COPY ({query}) TO '{tmp}' (FORMAT parquet)")
    os.replace(tmp, path)


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds.

    A killed or failing build leaves ``path`` as it was (and at most a ``.tmp`` sibling that
    the next run removes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- fsspec locations
def is_url(path: Path | str) -> bool:
    """True for ``scheme://...`` locations other than local files (s3://, gs://, memory://, http://)."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def _strip_file(path: Path | str) -> Path:
    s = str(path)
    return Path(s[len("file://"):] if s.startswith("file://") else s)


def read_bytes(path: Path | str) -> bytes:
    """A whole file from a local path or any fsspec URL (s3://, gs://, memory://, ...)."""
    if not is_url(path):
        return _strip_file(path).read_bytes()
    import fsspec

    with fsspec.open(str(path), "rb") as f:
        return f.read()


def local_file(path: Path | str, cache: Path | str | None = None) -> Path:
    """A local path for ``path``: itself when local (FileNotFoundError if missing), else a copy
    fetched once through fsspec into ``cache`` (default ``$LUMOS_CACHE`` or ~/.cache/lumos/fsspec),
    for readers that need a file name (mesh loaders, Blender, torch.jit.load)."""
    if not is_url(path):
        p = _strip_file(path)
        if not p.is_file():
            raise FileNotFoundError(f"no such file: {p}")
        return p
    import fsspec

    cache = Path(cache or os.environ.get("LUMOS_CACHE", Path.home() / ".cache/lumos")) / "fsspec"
    return Path(fsspec.open_local(f"simplecache::{path}", simplecache={"cache_storage": str(cache)}))


def join_location(base: Path | str, relative: str) -> Path | str:
    """``relative`` resolved against ``base``'s folder, for local paths and URLs alike."""
    if is_url(relative) or Path(relative).is_absolute():
        return relative
    if is_url(base):
        return str(base).rsplit("/", 1)[0] + "/" + relative
    return _strip_file(base).parent / relative
