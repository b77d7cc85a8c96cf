"""I2V data (supplement G.4): procedural WebVid clips -> 16 frames at interval 3, in shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytest.importorskip("av")

from lumos.demo.clips import build_clips, render_frame, webvid_duration  # noqa: E402
from lumos.demo.server import serve_directory  # noqa: E402
from lumos.video import (  # noqa: E402
    DownloadError,
    TooShortError,
    UndecodableError,
    camel_to_words,
    download_clip,
    iter_samples,
    prepare_clips,
    prepare_webvid,
    read_msrvtt,
    read_ucf101,
    read_webvid_csv,
    resize_crop,
    sample_frames,
)
from lumos.video.webvid import parse_duration  # noqa: E402

FRAMES, INTERVAL, R = 16, 3, 32  # the paper's sampling; a small resolution for speed
EXPECTED_REASON = {"too_short": "too_short", "truncated": "undecodable",
                   "not_video": "undecodable", "missing": "http_404"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The clip world built under a served folder, so its CSV holds the live URLs."""
    top = tmp_path_factory.mktemp("clips")
    with serve_directory(top) as url:
        root = top / "world"
        truth = build_clips(root, n=24, seed=0, base_url=f"{url}/world")
        yield url, root, truth


@pytest.fixture(scope="module")
def prepared(served, tmp_path_factory):
    url, root, truth = served
    out = tmp_path_factory.mktemp("prepared") / "webvid"
    stats = prepare_webvid(f"{url}/world/webvid.csv", out, FRAMES, INTERVAL, R,
                           allowed_url_prefixes=[url], workers=2, samples_per_shard=8,
                           timeout_s=5, retries=1)
    return out, stats


def _expected_frames(params: dict) -> np.ndarray:
    return np.stack([resize_crop(Image.fromarray(render_frame(params, t)), R)
                     for t in range(params["n_frames"])]).astype(np.int16)


def test_build_clips_is_deterministic_and_webvid_shaped(served, tmp_path):
    url, root, truth = served
    kinds = [t["kind"] for t in truth]
    assert kinds.count("ok") == 19 and kinds.count("too_short") == 2
    assert {"truncated", "not_video", "missing"} <= set(kinds)
    ok_lengths = [t["n_frames"] for t in truth if t["kind"] == "ok"]
    assert min(ok_lengths) >= 48 and max(ok_lengths) <= 80
    assert all(t["n_frames"] < FRAMES * INTERVAL for t in truth if t["kind"] == "too_short")
    header = (root / "webvid.csv").read_text().splitlines()[0]
    assert header == "videoid,contentUrl,duration,page_dir,name"
    assert pq.read_table(root / "clips.parquet").num_rows == 24
    again = build_clips(tmp_path / "again", n=24, seed=0, base_url=f"{url}/world")
    assert [t["params"] for t in again] == [t["params"] for t in truth]
    assert (tmp_path / "again/webvid.csv").read_bytes() == (root / "webvid.csv").read_bytes()
    assert webvid_duration(5) == "PT00H00M05S" and parse_duration("PT01H02M05S") == 3725.0


def test_read_webvid_csv_over_http(served):
    url, _, truth = served
    rows = read_webvid_csv(f"{url}/world/webvid.csv")
    assert [r.caption for r in rows] == [t["caption"] for t in truth]
    assert [r.url for r in rows] == [t["url"] for t in truth]
    assert rows[0].duration_s == round(truth[0]["n_frames"] / truth[0]["fps"])


def test_download_clip_errors_and_bytes(served, tmp_path):
    url, root, truth = served
    ok = truth[0]
    info = download_clip(ok["url"], tmp_path / "a.mp4", timeout=5, retries=0)
    assert (tmp_path / "a.mp4").read_bytes() == (root / ok["path"]).read_bytes()
    assert info["content_type"] == "video/mp4"
    with pytest.raises(DownloadError) as err:
        download_clip(f"{url}/world/clips/nope.mp4", tmp_path / "b.mp4", timeout=5, retries=3)
    assert err.value.reason == "http_404" and not (tmp_path / "b.mp4").exists()
    with pytest.raises(DownloadError) as err:  # nothing listens on port 9 of loopback
        download_clip("http://127.0.0.1:9/x.mp4", tmp_path / "c.mp4", timeout=1, retries=1)
    assert err.value.reason == "download_error"


def test_sample_frames_takes_every_third_frame(served):
    _, root, truth = served
    for t in [t for t in truth if t["kind"] == "ok"][:4]:
        params = json.loads(t["params"])
        got = sample_frames(root / t["path"], FRAMES, INTERVAL, R).astype(np.int16)
        assert got.shape == (FRAMES, R, R, 3)
        expected = _expected_frames(params)
        for i in range(FRAMES):
            mae = np.abs(expected - got[i]).mean(axis=(1, 2, 3))
            assert int(mae.argmin()) == i * INTERVAL, (t["key"], i, mae.argmin())
            assert mae[i * INTERVAL] < 4.0
    # a seeded offset: reproducible, within range, and still interval-spaced
    first = next(t for t in truth if t["kind"] == "ok")
    info_a, info_b = {}, {}
    a = sample_frames(root / first["path"], FRAMES, INTERVAL, R, start=None, seed=7, info=info_a)
    b = sample_frames(root / first["path"], FRAMES, INTERVAL, R, start=None, seed=7, info=info_b)
    assert np.array_equal(a, b) and info_a["start"] == info_b["start"]
    assert 0 <= info_a["start"] <= first["n_frames"] - ((FRAMES - 1) * INTERVAL + 1)


def test_sample_frames_errors(served):
    _, root, truth = served
    by_kind = {t["kind"]: t for t in truth}
    with pytest.raises(TooShortError) as err:
        sample_frames(root / by_kind["too_short"]["path"], FRAMES, INTERVAL, R)
    assert err.value.reason == "too_short" and err.value.decoded == by_kind["too_short"]["n_frames"]
    for kind in ("truncated", "not_video"):
        with pytest.raises(UndecodableError):
            sample_frames(root / by_kind[kind]["path"], FRAMES, INTERVAL, R)


def test_prepare_webvid_index_rejects_and_frames(served, prepared):
    _, _, truth = served
    out, stats = prepared
    assert stats["rows"] == 24 and stats["ok"] == 19 and stats["rejected"] == 5
    assert stats["shards"] == 3 and stats["shards_written"] == 3
    index = pq.read_table(out / "index.parquet").to_pylist()
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    by_videoid = {str(t["videoid"]): t for t in truth}
    assert sorted(r["videoid"] for r in index) == sorted(
        str(t["videoid"]) for t in truth if t["kind"] == "ok")
    assert all(r["status"] == "ok" and r["frames"] == FRAMES and r["interval"] == INTERVAL
               for r in index)
    assert {r["videoid"]: r["reason"] for r in rejects} == {
        str(t["videoid"]): EXPECTED_REASON[t["kind"]] for t in truth if t["kind"] != "ok"}
    samples = {key: (arr, meta) for key, arr, meta in iter_samples(out)}
    assert sorted(samples) == [r["key"] for r in index]
    for row in index:
        arr, meta = samples[row["key"]]
        t = by_videoid[row["videoid"]]
        assert arr.shape == (FRAMES, R, R, 3) and arr.dtype == np.uint8
        assert meta["caption"] == t["caption"] == row["caption"]
        assert meta["url"] == t["url"] and meta["start"] == 0 and meta["interval"] == INTERVAL
        assert meta["fps"] == t["fps"]
        expected = _expected_frames(json.loads(t["params"]))[::INTERVAL][:FRAMES]
        assert np.abs(expected - arr.astype(np.int16)).mean() < 4.0
    assert not list((out / ".work").rglob("*.video"))  # downloads are cleaned up


def test_prepare_webvid_resumes(served, prepared):
    url, _, _ = served
    out, _ = prepared
    csv_url = f"{url}/world/webvid.csv"
    kw = dict(allowed_url_prefixes=[url], workers=2, samples_per_shard=8, timeout_s=5, retries=1)
    index = (out / "index.parquet").read_bytes()
    tar = (out / "shards/00001.tar").read_bytes()
    again = prepare_webvid(csv_url, out, FRAMES, INTERVAL, R, **kw)
    assert again["shards_written"] == 0 and again["shards_skipped"] == 3
    assert (out / "index.parquet").read_bytes() == index
    # a run killed before shard 1 finished: only that shard is redone, to the same bytes
    (out / "parts/00001.done").unlink()
    (out / "shards/00001.tar").unlink()
    resumed = prepare_webvid(csv_url, out, FRAMES, INTERVAL, R, **kw)
    assert resumed["shards_written"] == 1
    assert (out / "shards/00001.tar").read_bytes() == tar
    assert (out / "index.parquet").read_bytes() == index


def test_prepare_rejects_urls_outside_the_allowed_prefix(served, tmp_path):
    url, _, _ = served
    rows = read_webvid_csv(f"{url}/world/webvid.csv")[:2]
    stats = prepare_clips(rows, tmp_path / "out", FRAMES, INTERVAL, R,
                          allowed_url_prefixes=["http://example.invalid/"])
    assert stats["ok"] == 0 and stats["reasons"] == {"not_allowed": 2}


def test_camel_case_captions():
    assert camel_to_words("ApplyEyeMakeup") == "apply eye makeup"
    assert camel_to_words("YoYo") == "yo yo"
    assert camel_to_words("HandstandPushups") == "handstand pushups"
    assert camel_to_words("PlayingDaf") == "playing daf"
    assert camel_to_words("UCFSports101") == "ucf sports 101"


def test_ucf101_and_msrvtt_layouts(served, tmp_path):
    _, root, truth = served
    ok = [t for t in truth if t["kind"] == "ok"]
    ucf = tmp_path / "UCF-101"
    for cls, t in (("ApplyEyeMakeup", ok[0]), ("JumpingJack", ok[1]), ("JumpingJack", ok[2])):
        (ucf / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / t["path"], ucf / cls / f"v_{cls}_g01_c0{t['key'][-1]}.avi")
    (ucf / "ApplyEyeMakeup" / "notes.txt").write_text("not a video")
    rows = read_ucf101(ucf)
    assert [r.caption for r in rows] == ["apply eye makeup", "jumping jack", "jumping jack"]
    assert rows[0].videoid == "v_ApplyEyeMakeup_g01_c00" and rows[0].url.startswith("file://")
    stats = prepare_clips(rows, tmp_path / "ucf-out", FRAMES, INTERVAL, R, workers=2)
    assert stats["ok"] == 3 and stats["rejected"] == 0

    videos = tmp_path / "msrvtt" / "videos"
    videos.mkdir(parents=True)
    shutil.copy(root / ok[3]["path"], videos / "video0.mp4")
    shutil.copy(root / ok[4]["path"], videos / "video1.mp4")
    ann = {
        "videos": [{"video_id": "video0", "start time": 1.0, "end time": 9.5},
                   {"video_id": "video1"}, {"video_id": "video2"}],
        "sentences": [{"video_id": "video0", "caption": "a man is cooking", "sen_id": 0},
                      {"video_id": "video1", "caption": "a dog runs", "sen_id": 1},
                      {"video_id": "video0", "caption": "someone cooks food", "sen_id": 2}],
    }
    (tmp_path / "msrvtt" / "train_val_videodatainfo.json").write_text(json.dumps(ann))
    rows = read_msrvtt(tmp_path / "msrvtt" / "train_val_videodatainfo.json", videos)
    assert [(r.videoid, r.caption) for r in rows] == [("video0", "a man is cooking"),
                                                    ("video1", "a dog runs")]
    assert rows[0].duration_s == 8.5 and rows[1].duration_s is None
    assert Path(rows[0].url.removeprefix("file://")).exists()
    every = read_msrvtt(tmp_path / "msrvtt" / "train_val_videodatainfo.json", videos,
                        all_captions=True)
    assert [r.caption for r in every] == ["a man is cooking", "someone cooks food", "a dog runs"]
    stats = prepare_clips(rows, tmp_path / "msr-out", FRAMES, INTERVAL, R, workers=2)
    assert stats["ok"] == 2
