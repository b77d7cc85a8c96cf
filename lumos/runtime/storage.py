"""Stage outputs on a local folder or any fsspec URL (s3://, gs://, memory://...), written atomically.

Credentials and endpoints come from the environment as fsspec and s3fs read them (AWS_* and
``FSSPEC_S3_ENDPOINT_URL`` for an S3-compatible server); :func:`forwarded_env` hands the same
variables to Ray workers. A shard file is written whole under a temporary name and then moved into
place locally; on an object store a single PUT (or a completed multipart upload) is atomic, and
each shard's small stamp file, written last, is what marks it finished.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

ENV_PREFIXES = ("AWS_", "FSSPEC_", "GOOGLE_", "AZURE_")


def forwarded_env() -> dict[str, str]:
    """The storage credentials/endpoints of this process, for Ray workers started elsewhere."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


def normalize(location: Path | str) -> str:
    """A URL as given (no trailing slash), a local path made absolute: the form :func:`glob` returns."""
    s = str(location).rstrip("/")
    if s.startswith("file://"):
        s = s[len("file://"):]
    return s if "://" in s else str(Path(s).resolve())


def register_duckdb(con, location: Path | str) -> None:
    """Let DuckDB read ``location``'s scheme through fsspec (s3://, gs://...); local: nothing."""
    import duckdb

    if "://" in normalize(location):
        try:
            con.register_filesystem(fs_and_path(location)[0])
        except duckdb.InvalidInputException as err:  # this connection already reads that scheme
            if "already been registered" not in str(err):
                raise


def fs_and_path(location: Path | str) -> tuple[fsspec.AbstractFileSystem, str]:
    return url_to_fs(str(location))


def join(location: Path | str, *parts: str) -> str:
    """``location/part/...`` for local folders and URLs alike."""
    return "/".join([str(location).rstrip("/"), *parts])


def glob(location: Path | str, pattern: str) -> list[str]:
    """Sorted matches of ``pattern`` under ``location``, as full locations (URLs keep their scheme)."""
    fs, root = fs_and_path(location)
    found = fs.glob(join(root, pattern))
    if "://" not in normalize(location):
        return sorted(found)
    return sorted(fs.unstrip_protocol(p) for p in found)


def exists(location: Path | str) -> bool:
    fs, path = fs_and_path(location)
    return fs.exists(path)


def read_bytes(location: Path | str) -> bytes:
    fs, path = fs_and_path(location)
    return fs.cat_file(path)


def remove(location: Path | str) -> None:
    fs, path = fs_and_path(location)
    if fs.exists(path):
        fs.rm(path)


def makedirs(location: Path | str) -> None:
    fs, path = fs_and_path(location)
    fs.makedirs(path, exist_ok=True)


def write_bytes_atomic(location: Path | str, data: bytes) -> None:
    """The whole file or nothing: a temporary sibling renamed locally, one PUT on object stores."""
    fs, path = fs_and_path(location)
    if isinstance(fs, LocalFileSystem):
        from lumos.io import atomic_write_bytes

        atomic_write_bytes(path, data)
        return
    fs.pipe_file(path, data)


def split_member(name: str) -> tuple[str, str]:
    """WebDataset's grouping: ``dir/00001.jpg`` -> (``dir/00001``, ``jpg``) (first dot of the base)."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower() if dot else ""


def iter_tar_samples(location: Path | str) -> Iterator[dict]:
    """The samples of a WebDataset tar, one at a time, streamed (``r|``): a shard is never held
    whole, in memory or on disk, and a remote shard is read sequentially as it downloads."""
    fs, path = fs_and_path(location)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        sample: dict = {}
        for member in tar:
            if not member.isfile():
                continue
            key, ext = split_member(member.name)
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample.setdefault("__key__", key)
            sample[ext] = tar.extractfile(member).read()
        if sample:
            yield sample


def read_members(location: Path | str, members: list[str]) -> Iterator[tuple[str, bytes]]:
    """(member, bytes) for the wanted members of a tar, in the tar's order, streamed."""
    wanted = set(members)
    fs, path = fs_and_path(location)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:
            if member.name in wanted:
                yield member.name, tar.extractfile(member).read()
