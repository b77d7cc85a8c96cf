"""Data paths as fsspec URLs (issue 9's scale-out): the WebVid CSV, the Objaverse object list and
its meshes, and weight files are read from any fsspec filesystem; fsspec's in-memory filesystem
stands in for s3:// or gs:// (the same code path, no network)."""

from __future__ import annotations

import json

import fsspec
import pytest
import torch

from lumos.io import join_location, local_file, read_bytes
from lumos.render.stages import read_object_list
from lumos.video.webvid import read_webvid_csv


@pytest.fixture
def bucket():
    fs = fsspec.filesystem("memory")
    root = "memory://lumos-test-bucket"
    yield fs, root
    fs.rm(root, recursive=True)


def test_webvid_csv_from_an_fsspec_url(bucket):
    fs, root = bucket
    with fs.open(f"{root}/webvid.csv", "w") as f:
        f.write("videoid,contentUrl,duration,page_dir,name\n7,http://x/7.mp4,PT00H00M05S,d,a red square\n")
    (row,) = read_webvid_csv(f"{root}/webvid.csv")
    assert (row.videoid, row.url, row.caption, row.duration_s) == ("7", "http://x/7.mp4", "a red square", 5.0)


def test_object_list_and_meshes_from_an_fsspec_url(bucket, tmp_path):
    fs, root = bucket
    fs.pipe(f"{root}/objects/a.glb", b"glTF-bytes")
    fs.pipe(f"{root}/objects.json", json.dumps({"a": "objects/a.glb", "b": "objects/missing.glb"}).encode())
    objects = read_object_list(f"{root}/objects.json")
    assert objects["a"] == f"{root}/objects/a.glb"
    local = local_file(objects["a"], cache=tmp_path)
    assert local.is_file() and local.read_bytes() == b"glTF-bytes" and tmp_path in local.parents
    with pytest.raises(FileNotFoundError):
        local_file(objects["b"], cache=tmp_path)


def test_weights_by_url_load_like_a_path(bucket, tmp_path):
    fs, root = bucket
    local = tmp_path / "w.pt"
    torch.save({"w": torch.arange(3.0)}, local)
    fs.pipe(f"{root}/w.pt", local.read_bytes())
    fetched = local_file(f"{root}/w.pt", cache=tmp_path / "cache")
    assert torch.equal(torch.load(fetched, weights_only=True)["w"], torch.arange(3.0))
    assert read_bytes(f"{root}/w.pt") == read_bytes(local) == read_bytes(f"file://{local}")


def test_local_paths_and_joins(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        local_file(tmp_path / "nope.bin")
    assert join_location(tmp_path / "objects.json", "a/b.glb") == tmp_path / "a/b.glb"
    assert join_location("s3://bucket/list/objects.json", "a/b.glb") == "s3://bucket/list/a/b.glb"
    assert join_location("s3://bucket/objects.json", "gs://other/x.glb") == "gs://other/x.glb"
