"""Scoring that follows a download in progress (curation.score_while_downloading): each shard is
scored once img2dataset has finished it, the files equal the sequential score stage's, a rerun
skips everything, and a failed download or a failed score is a clear error."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lumos.config import Aesthetic
from lumos.curation.fetch import download_and_score
from lumos.curation.score import score_source, score_stream
from lumos.demo import serve_mini_world

from test_ray_stages import SETTINGS, _tables, write_shards


def _wait_for(path: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout_s} s"
        time.sleep(0.05)


def _same_scores(a: Path, b: Path) -> None:
    assert _tables(a) == _tables(b) and _tables(a)
    assert {p.name: p.read_text() for p in a.glob("*.json")} == {p.name: p.read_text() for p in b.glob("*.json")}


def _follow(dl: Path, out: Path, finished: threading.Event, result: dict, **kw) -> threading.Thread:
    def run() -> None:
        result.update(score_stream(dl, out, SETTINGS, finished, decode_batch=4, poll_s=0.05, **kw))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _release_shards_one_by_one(src: Path, dl: Path, out: Path) -> None:
    """Play img2dataset: per shard the tar first, its ``_stats.json`` last; the next shard only
    once the previous one is scored. A tar without its stats file is not scored."""
    (dl / "shards").mkdir(parents=True)
    for tar in sorted((src / "shards").glob("*.tar")):
        shutil.copy(tar, dl / "shards" / tar.name)
        time.sleep(0.3)  # several polls
        assert not (out / f"{tar.stem}.parquet").exists()  # still being written, as far as anyone knows
        shutil.copy(src / "shards" / f"{tar.stem}_stats.json", dl / "shards")
        _wait_for(out / f"{tar.stem}.json")


def test_each_shard_is_scored_as_it_finishes_and_the_files_match_the_score_stage(tmp_path):
    src = write_shards(tmp_path / "src", shards=3, per_shard=6)
    dl, out, finished, result = tmp_path / "dl", tmp_path / "streamed", threading.Event(), {}
    thread = _follow(dl, out, finished, result)
    _release_shards_one_by_one(src, dl, out)
    finished.set()
    thread.join(60)
    assert result == {"scored": 3, "cached": 0}
    score_source(src, tmp_path / "sequential", SETTINGS, decode_batch=4)
    _same_scores(out, tmp_path / "sequential")  # same rows, same stamps (same shard bytes)
    assert score_source(dl, out, SETTINGS) == {"scored": 0, "cached": 3}  # the score stage after it


def test_stream_on_ray_matches_too(tmp_path, ray_cluster):
    src = write_shards(tmp_path / "src", shards=2, per_shard=6)
    dl, out, finished, result = tmp_path / "dl", tmp_path / "streamed", threading.Event(), {}
    seen: list = []
    thread = _follow(dl, out, finished, result, ray=ray_cluster, workers=1,
                     on_shard=lambda done, known, outcome: seen.append((done, known, outcome)))
    _release_shards_one_by_one(src, dl, out)
    finished.set()
    thread.join(60)
    assert result == {"scored": 2, "cached": 0} and seen == [(1, 1, "scored"), (2, 2, "scored")]
    score_source(src, tmp_path / "sequential", SETTINGS, decode_batch=4)
    _same_scores(out, tmp_path / "sequential")
    # the score stage finds every stamp current and checks them itself: no shard goes to Ray
    assert score_source(dl, out, SETTINGS, ray=ray_cluster) == {"scored": 0, "cached": 2}


def _small_selection(curated, tmp_path: Path, rows: int) -> Path:
    _, _, run = curated
    selected = tmp_path / "selected.parquet"
    pq.write_table(pq.read_table(run.select / "selected.parquet").slice(0, rows), selected)
    return selected


def _base_url(curated) -> str:
    """Where the curated fixture's mini-world URLs point."""
    from lumos.curation.catalog import query

    return query("SELECT url FROM images LIMIT 1", curated[2].catalog).fetchall()[0][0].split("/images/")[0]


def test_download_and_score_equals_download_then_score(curated, tmp_path):
    cfg, root, _ = curated
    dl = cfg.download.model_copy(update={"samples_per_shard": 20})
    with serve_mini_world(root, _base_url(curated)):
        result = download_and_score(_small_selection(curated, tmp_path, 50), tmp_path / "download",
                                    tmp_path / "scores", dl, cfg.score, poll_s=0.05)
    assert result["download"]["shards"] == 3 and result["score"] == {"scored": 3, "cached": 0}
    assert result["seconds"]["download"] > 0 and result["seconds"]["score_after_download"] >= 0
    assert sum(result["download"]["status"].values()) == 50
    score_source(tmp_path / "download", tmp_path / "sequential", cfg.score)
    _same_scores(tmp_path / "scores", tmp_path / "sequential")
    # the score stage that follows (dvc's curate-score) finds every shard current
    assert score_source(tmp_path / "download", tmp_path / "scores", cfg.score) == {"scored": 0, "cached": 3}


def test_a_failed_download_is_raised_as_it_is(curated, tmp_path):
    cfg, _, _ = curated
    with pytest.raises(Exception, match="missing.parquet"):
        download_and_score(tmp_path / "missing.parquet", tmp_path / "download", tmp_path / "scores",
                           cfg.download, cfg.score)


def test_a_failed_score_is_raised_after_the_download(curated, tmp_path):
    cfg, root, _ = curated
    broken = cfg.score.model_copy(update={"aesthetic": Aesthetic(clip_model="no-such-clip")})
    dl = cfg.download.model_copy(update={"samples_per_shard": 10})
    with serve_mini_world(root, _base_url(curated)):
        with pytest.raises(RuntimeError, match="while downloading failed") as err:
            download_and_score(_small_selection(curated, tmp_path, 10), tmp_path / "download",
                               tmp_path / "scores", dl, broken)
    assert "no-such-clip" in str(err.value)
    assert len(list((tmp_path / "download" / "shards").glob("*_stats.json"))) == 1  # the download finished
