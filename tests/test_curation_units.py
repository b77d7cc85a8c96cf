"""Curation building blocks: readers, URL safety, bounded decoding, near-duplicate search."""

from __future__ import annotations

import io
import math

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lumos.config import Source
from lumos.curation.score import decode_bounded
from lumos.curation.select import host_refusal, select_source, selection_size
from lumos.curation.sources import INTERNAL_COLUMNS, READERS


def test_laion_and_coyo_readers_map_onto_the_internal_schema(tmp_path):
    pq.write_table(pa.table({"URL": ["http://a/1.jpg"], "TEXT": ["t"], "WIDTH": [600], "HEIGHT": [700],
                             "similarity": [0.3], "punsafe": [0.1], "pwatermark": [0.2],
                             "AESTHETIC_SCORE": [5.5], "hash": [42]}), tmp_path / "laion.parquet")
    pq.write_table(pa.table({"id": [7], "url": ["http://b/2.jpg"], "text": ["c"], "width": [800],
                             "height": [900], "aesthetic_score_laion_v2": [6.0],
                             "nsfw_score_opennsfw2": [0.01], "watermark_score": [0.3]}),
                   tmp_path / "coyo.parquet")
    laion = duckdb.sql(READERS["laion"].sql("L", str(tmp_path / "laion.parquet"))).fetchall()
    coyo = duckdb.sql(READERS["coyo"].sql("C", str(tmp_path / "coyo.parquet"))).fetchall()
    assert laion == [("L:42", "L", "http://a/1.jpg", "t", 600, 700, 5.5, 0.1, 0.2)]
    assert coyo == [("C:7", "C", "http://b/2.jpg", "c", 800, 900, 6.0, 0.01, 0.3)]
    assert len(laion[0]) == len(INTERNAL_COLUMNS)


def test_unknown_reader_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: .*laion"):
        READERS["flickr"]


@pytest.mark.parametrize("host,allowed,refused", [
    ("127.0.0.1", [], True),
    ("localhost", [], True),
    ("10.1.2.3", [], True),
    ("192.168.0.7", [], True),
    ("169.254.169.254", [], True),  # cloud metadata endpoint
    ("127.0.0.1", ["127.0.0.1"], False),
    ("93.184.215.14", [], False),  # a public address
    ("no-such-host.invalid", [], False),  # unresolvable: the download records its own error
])
def test_host_refusal(host, allowed, refused):
    assert (host_refusal(host, allowed) is not None) == refused


def test_select_refuses_unsafe_urls_with_a_recorded_reason(params, tmp_path):
    urls = ["file:///etc/passwd", "ftp://x/y.jpg", "http://127.0.0.1:9/a.jpg",
            "http://10.0.0.1/b.jpg", "http://93.184.215.14/c.jpg", "http://93.184.215.14/c.jpg"]
    n = len(urls)
    pq.write_table(pa.table({"URL": urls, "TEXT": ["t"] * n, "WIDTH": [800] * n, "HEIGHT": [800] * n,
                             "similarity": [0.3] * n, "punsafe": [0.0] * n, "pwatermark": [0.0] * n,
                             "AESTHETIC_SCORE": [6.0] * n, "hash": list(range(n))}),
                   tmp_path / "m.parquet")
    cfg = params.active.curation.model_copy(update={"download": params.active.curation.download.model_copy(
        update={"allow_hosts": []})})
    stats = select_source(cfg, Source(name="s", reader="laion", metadata=str(tmp_path / "m.parquet")),
                          tmp_path / "out")
    reasons = dict(duckdb.sql(f"SELECT url, reason FROM '{tmp_path}/out/rejects.parquet'").fetchall())
    assert reasons["file:///etc/passwd"] == "url: file:// not allowed"
    assert reasons["ftp://x/y.jpg"] == "url: unsupported scheme"
    assert reasons["http://127.0.0.1:9/a.jpg"].startswith("url: host 127.0.0.1 resolves to non-public")
    assert reasons["http://10.0.0.1/b.jpg"].startswith("url: host 10.0.0.1")
    assert stats["selected"] == 1 and stats["rejected"]["duplicate url"] == 1
    assert stats["rows_in"] == n == stats["selected"] + sum(stats["rejected"].values())


def test_quota_is_a_seeded_sample(params, mini_world, tmp_path):
    _, root, _ = mini_world
    cfg = params.active.curation
    src = Source(name="q", reader="laion", metadata=str(root / "metadata.parquet"), quota=20)
    picks = []
    for run, seed in enumerate((0, 0, 1)):
        stats = select_source(cfg.model_copy(update={"seed": seed}), src, tmp_path / str(run))
        assert stats["selected"] == selection_size(cfg, src) == math.ceil(20 * cfg.quota_overfetch)
        picks.append(duckdb.sql(f"SELECT list(uid ORDER BY uid) FROM '{tmp_path}/{run}/selected.parquet'").fetchall()[0][0])
    assert picks[0] == picks[1] != picks[2]


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), "red").save(buf, format="PNG")
    return buf.getvalue()


def test_decoding_is_bounded_and_reports_why():
    img, w, h, err = decode_bounded(_png(40, 30), max_pixels=10_000)
    assert (img.size, w, h, err) == ((40, 30), 40, 30, None)
    img, w, h, err = decode_bounded(_png(200, 100), max_pixels=10_000)
    assert img is None and (w, h) == (200, 100) and err.startswith("too many pixels")
    assert decode_bounded(_png(200, 100)[:-200], 10**6)[3] == "truncated image"
    assert decode_bounded(b"<html>hello</html>", 10**6)[3] == "not an image: unknown format"


def test_select_reads_metadata_globs_through_fsspec(params, mini_world, tmp_path):
    import fsspec

    _, root, _ = mini_world
    table = pq.read_table(root / "metadata.parquet")
    fs = fsspec.filesystem("memory")
    half = table.num_rows // 2
    for i, part in enumerate((table.slice(0, half), table.slice(half))):
        with fs.open(f"memory://laion/part-{i}.parquet", "wb") as f:
            pq.write_table(part, f)
    cfg = params.active.curation
    remote = select_source(cfg, Source(name="r", reader="laion", metadata="memory://laion/*.parquet"),
                           tmp_path / "remote")
    local = select_source(cfg, Source(name="r", reader="laion", metadata=str(root / "metadata.parquet")),
                          tmp_path / "local")
    assert remote == local and remote["rows_in"] == table.num_rows


def test_unreadable_metadata_is_a_clear_error(params, tmp_path):
    with pytest.raises(RuntimeError, match="source 'x': cannot read"):
        select_source(params.active.curation,
                      Source(name="x", reader="laion", metadata=str(tmp_path / "none*.parquet")), tmp_path)


def test_a_distributor_without_its_package_fails_before_downloading(tmp_path):
    import importlib.util

    from lumos.config import Download
    from lumos.curation.download import check_distributor, download_source

    check_distributor("multiprocessing")  # always there
    check_distributor("ray")  # in requirements.lock (the scale-out engine)
    assert importlib.util.find_spec("pyspark") is None  # not in requirements.lock
    with pytest.raises(RuntimeError, match="'pyspark' is not installed: pip install pyspark"):
        download_source(tmp_path / "none.parquet", tmp_path / "out", Download(distributor="pyspark"))
    assert not (tmp_path / "out").exists()  # nothing was started
