"""The curation chain end to end on the mini-world, served on 127.0.0.1 (no mocks).

select (DuckDB) -> download (img2dataset) -> score -> keep -> catalog, checked against the
mini-world's ground truth: exactly the rows that pass the rules are kept, and every bad row is
rejected with its reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from lumos.curation.catalog import query
from lumos.curation.keep import keep_source
from lumos.curation.score import score_source

from conftest import ROOT


def _truth(root: Path) -> dict[str, dict]:
    meta = {r["URL"]: r for r in pq.read_table(root / "metadata.parquet").to_pylist()}
    return {t["URL"]: {**t, **meta[t["URL"]]} for t in pq.read_table(root / "scenes.parquet").to_pylist()}


def test_catalog_holds_exactly_the_rows_that_pass_the_rules(curated):
    cfg, root, run = curated
    sel, keep = cfg.select, cfg.keep
    expected = set()
    for url, t in _truth(root).items():
        declared_ok = (min(t["WIDTH"], t["HEIGHT"]) > sel.min_side and t["AESTHETIC_SCORE"] > sel.aesthetic_min
                       and t["punsafe"] <= sel.punsafe_max and t["pwatermark"] <= sel.pwatermark_max)
        true_ok = (t["kind"] in ("ok", "duplicate") and min(t["true_width"], t["true_height"]) > keep.min_side
                   and t["AESTHETIC_SCORE"] > keep.aesthetic_min)  # tiny keeps on the declared score
        if declared_ok and true_ok:
            expected.add(url)
    pairs = [(url, next(u for u, o in _truth(root).items() if o["key"] == t["duplicate_of"]))
             for url, t in _truth(root).items() if t["kind"] == "duplicate"]
    kept = {r[0] for r in query("SELECT url FROM images", run.catalog).fetchall()}
    for dup, original in pairs:  # one of each exact-duplicate pair survives
        assert (dup in kept) != (original in kept)
        expected.discard(dup if original in kept else original)
    assert kept == expected
    assert len(kept) > 50


def test_every_bad_row_is_rejected_with_its_reason(curated):
    _, root, run = curated
    reasons = dict(query("SELECT url, reason FROM rejects", run.catalog).fetchall())
    truth = _truth(root)
    expect = {"missing": "download: HTTP Error 404", "truncated": "decode: truncated image",
              "not_image": "decode: not an image", "huge": "decode: too many pixels",
              "wrong_size": "resolution: true size"}
    for url, t in truth.items():
        if t["kind"] in expect:
            assert reasons[url].startswith(expect[t["kind"]]), (t["key"], reasons[url])
        elif t["kind"] == "duplicate":
            original = next(u for u, o in truth.items() if o["key"] == t["duplicate_of"])
            loser = url if url in reasons and original not in reasons else original
            assert reasons[loser].startswith("near duplicate of ")


def test_funnel_adds_up(curated):
    _, root, run = curated
    rel = query("SELECT * FROM funnel", run.catalog)
    (row,) = [dict(zip(rel.columns, r)) for r in rel.fetchall()]
    assert row["rows_in"] == pq.read_metadata(root / "metadata.parquet").num_rows
    assert row["rows_in"] > row["selected"] > row["downloaded"] > row["decoded"] > row["kept"] > 0
    n_images = query("SELECT count(*) FROM images", run.catalog).fetchall()[0][0]
    n_rejects = query("SELECT count(*) FROM rejects", run.catalog).fetchall()[0][0]
    assert row["kept"] == n_images and n_images + n_rejects == row["rows_in"]
    views = query("SELECT * FROM images LIMIT 1", run.catalog).columns
    assert views == ["key", "source", "shard", "member", "width", "height", "aesthetic", "caption",
                     "status", "uid", "url"]


def test_kept_samples_are_readable_from_their_shards(curated):
    import tarfile

    _, _, run = curated
    rows = query("SELECT shard, member, width, height FROM images LIMIT 5", run.catalog).fetchall()
    from PIL import Image
    for shard, member, w, h in rows:
        with tarfile.open(shard) as tar:
            assert Image.open(tar.extractfile(member)).size == (w, h)


def test_threshold_change_reruns_keep_alone(curated, tmp_path):
    cfg, _, run = curated
    stamps = {p: p.stat().st_mtime_ns for d in (run.download, run.scores) for p in d.rglob("*")}
    assert score_source(run.download, run.scores, cfg.score) == {"scored": 0, "cached": len(
        list(run.scores.glob("*.parquet")))}
    before = pq.read_metadata(run.keep / "kept.parquet").num_rows
    stricter = cfg.keep.model_copy(update={"aesthetic_min": 6.0})
    stats = keep_source(run.select / "selected.parquet", run.download, run.scores, tmp_path / "k", stricter)
    assert 0 < stats["kept"] < before
    assert stamps == {p: p.stat().st_mtime_ns for d in (run.download, run.scores) for p in d.rglob("*")}


def test_scores_recompute_when_the_scorer_changes(curated, tmp_path):
    cfg, _, run = curated
    import shutil
    shutil.copytree(run.scores, tmp_path / "s")
    n = len(list(run.scores.glob("*.parquet")))
    other = cfg.score.model_copy(update={"max_pixels": cfg.score.max_pixels + 1})
    assert score_source(run.download, tmp_path / "s", other) == {"scored": n, "cached": 0}


KILLABLE = """
import json, sys
from lumos.config import Download
from lumos.curation.download import download_source
from lumos.demo import serve_mini_world
if __name__ == "__main__":
    root, base_url, selected, out, dl = sys.argv[1:]
    with serve_mini_world(root, base_url):
        download_source(selected, out, Download.model_validate_json(dl))
"""


def test_kill_9_mid_download_then_rerun_loses_and_duplicates_nothing(curated, tmp_path):
    cfg, root, run = curated
    world_base = query("SELECT url FROM images LIMIT 1", run.catalog).fetchall()[0][0].split("/images/")[0]
    dl = cfg.download.model_copy(update={"samples_per_shard": 8, "threads": 2})
    script = tmp_path / "download.py"
    script.write_text(KILLABLE)
    out = tmp_path / "dl"
    args = [sys.executable, str(script), str(root), world_base, str(run.select / "selected.parquet"),
            str(out), dl.model_dump_json()]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shards/*_stats.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the download and its img2dataset workers
    proc.wait()
    total = -(-pq.read_metadata(run.select / "selected.parquet").num_rows // 8)
    done = len(list(out.glob("shards/*_stats.json")))
    assert 2 <= done < total, "the kill landed mid-download"

    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    rows = duckdb.sql(f"SELECT uid, status FROM read_parquet('{out}/shards/*.parquet') ORDER BY uid").fetchall()
    reference = duckdb.sql(f"SELECT uid, status FROM read_parquet('{run.download}/shards/*.parquet') ORDER BY uid").fetchall()
    assert rows == reference  # every selected row once, with the same outcome
    tars = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/shards/*.parquet') WHERE status = 'success'").fetchall()
    import tarfile
    members = sum(len([m for m in tarfile.open(t).getnames() if m.endswith(".jpg")])
                  for t in out.glob("shards/*.tar"))
    assert members == tars[0][0]
