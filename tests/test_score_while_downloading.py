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


def test_the_end_of_the_download_wakes_a_waiting_stream_at_once(tmp_path):
    """The last shard is scored when the download ends, not a poll interval later: a stream
    polling every 10 minutes still finishes its last shard once ``finished`` is set."""
    src = write_shards(tmp_path / "src", shards=1, per_shard=3)
    dl, out, finished, result = tmp_path / "dl", tmp_path / "streamed", threading.Event(), {}

    def run() -> None:
        result.update(score_stream(dl, out, SETTINGS, finished, decode_batch=4, poll_s=600))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.5)  # the stream has looked once, found nothing and waits
    shutil.copytree(src / "shards", dl / "shards")
    finished.set()
    thread.join(60)
    assert not thread.is_alive(), "the stream slept through the download's end"
    assert result == {"scored": 1, "cached": 0} and (out / "00000.parquet").exists()


def test_the_stream_dispatch_on_ray_takes_jobs_as_they_arrive(tmp_path, ray_cluster):
    """map_shard_stream: a host runs each job as soon as it arrives, while later ones do not
    exist yet (score jobs whose stamps are current: the dispatch, not the scorer, is tested)."""
    from lumos.curation.score import ScoreWorker, finished_shards, score_job
    from lumos.runtime import storage
    from lumos.runtime.ray import map_shard_stream

    dl = write_shards(tmp_path / "dl", shards=3, per_shard=2)
    score_source(dl, tmp_path / "scores", SETTINGS, decode_batch=4)
    root, out = storage.normalize(dl), storage.normalize(tmp_path / "scores")
    jobs = [score_job(t, root, out) for t in finished_shards(root)]
    done: list = []

    def arrivals():
        yield []  # nothing finished yet
        yield jobs[:1]
        deadline = time.monotonic() + 120
        while not done:  # the next shards appear only after the first came back
            assert time.monotonic() < deadline
            yield []
        yield jobs[1:]

    results = map_shard_stream(ScoreWorker, (SETTINGS, 4, "cpu"), arrivals(), ray_cluster, workers=1,
                               poll_s=0.05, on_done=lambda n, known, r: done.append((n, known)))
    assert results == ["cached"] * 3 and done == [(1, 1), (2, 3), (3, 3)]


def test_the_score_stage_after_a_stream_checks_the_stamps_without_ray(tmp_path, monkeypatch):
    from lumos.config import RaySettings
    from lumos.curation import score

    def no_ray(*args, **kwargs):
        raise AssertionError("dispatched to Ray")

    dl = write_shards(tmp_path / "dl", shards=2, per_shard=4)
    score_source(dl, tmp_path / "scores", SETTINGS, decode_batch=4)
    monkeypatch.setattr(score, "map_shards", no_ray)
    monkeypatch.setattr(score, "model_gpus", lambda ray, device: 0.0)
    assert score_source(dl, tmp_path / "scores", SETTINGS, ray=RaySettings()) == {"scored": 0, "cached": 2}
    (dl / "shards" / "00001.tar").write_bytes(b"changed")  # a stale stamp: to the actors after all
    with pytest.raises(AssertionError, match="dispatched to Ray"):
        score_source(dl, tmp_path / "scores", SETTINGS, ray=RaySettings())


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
    """A failed score is raised once the download ended; the rerun finds every shard downloaded,
    scores them and writes what download-then-score writes."""
    cfg, root, _ = curated
    dl = cfg.download.model_copy(update={"samples_per_shard": 20})
    selected = _small_selection(curated, tmp_path, 50)
    broken = cfg.score.model_copy(update={"aesthetic": Aesthetic(clip_model="no-such-clip")})
    with serve_mini_world(root, _base_url(curated)):
        with pytest.raises(RuntimeError, match="while downloading failed") as err:
            download_and_score(selected, tmp_path / "download", tmp_path / "scores", dl, broken, poll_s=0.05)
        assert "no-such-clip" in str(err.value)
        assert len(list((tmp_path / "download" / "shards").glob("*_stats.json"))) == 3  # downloaded
    result = download_and_score(selected, tmp_path / "download", tmp_path / "scores", dl, cfg.score,
                                poll_s=0.05)  # no server: nothing is fetched again
    assert result["download"]["shards"] == 3 and result["score"] == {"scored": 3, "cached": 0}
    assert sum(result["download"]["status"].values()) == 50
    assert result["seconds"]["download"] > 0 and result["seconds"]["score_after_download"] >= 0
    score_source(tmp_path / "download", tmp_path / "sequential", cfg.score)
    _same_scores(tmp_path / "scores", tmp_path / "sequential")
    # the score stage that follows (dvc's curate-score) finds every shard current
    assert score_source(tmp_path / "download", tmp_path / "scores", cfg.score) == {"scored": 0, "cached": 3}


def test_a_failed_download_is_raised_as_it_is(curated, tmp_path):
    cfg, _, _ = curated
    with pytest.raises(Exception, match="missing.parquet"):
        download_and_score(tmp_path / "missing.parquet", tmp_path / "download", tmp_path / "scores",
                           cfg.download, cfg.score)

