"""The text-image set: T2I subset, resumable captions, caption mixing, the T5 cache."""

from __future__ import annotations

import json

import duckdb
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open

from lumos.caption.captions import caption_subset
from lumos.caption.mixing import CaptionMixer
from lumos.caption.subset import select_t2i
from lumos.config import SubsetRule, T2IData, TextEncoder
from lumos.curation.catalog import query
from lumos.data.text_features import extract_text_features
from lumos.encoders.t5 import T5TextEncoder


def test_mixing_ratio_is_honoured_over_many_draws():
    mixer = CaptionMixer(0.7)
    g = torch.Generator().manual_seed(0)
    has_long = torch.ones(1000, dtype=torch.bool)
    draws = torch.cat([mixer.choose(has_long, g) for _ in range(50)])
    n = draws.numel()
    p_hat = draws.float().mean().item()
    assert abs(p_hat - 0.7) < 4 * (0.7 * 0.3 / n) ** 0.5  # within 4 standard errors
    assert mixer.fallbacks == 0 and mixer.drawn_long + mixer.drawn_raw == n


def test_missing_long_captions_fall_back_to_raw_and_are_counted():
    mixer = CaptionMixer(1.0)
    has_long = torch.tensor([True, False, True, False])
    raw, long = torch.zeros(4, 3, 2), torch.ones(4, 3, 2)
    mixed = mixer.mix(raw, long, has_long, torch.Generator().manual_seed(0))
    assert mixed[:, 0, 0].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert mixer.fallbacks == 2 and mixer.drawn_long == 2 and mixer.drawn_raw == 2


def test_t2i_subset_applies_resolution_aesthetic_and_quota(curated, tmp_path):
    _, _, run = curated
    stats = select_t2i(run.catalog, T2IData(), tmp_path / "all")
    rows = pq.read_table(tmp_path / "all/subset.parquet").to_pylist()
    expected = query("SELECT count(*) FROM images WHERE least(width, height) > 512 AND aesthetic > 5.5",
                     run.catalog).fetchall()[0][0]
    assert stats["selected"] == len(rows) == expected > 10
    quota = select_t2i(run.catalog, T2IData(quotas={"mw": 7}, seed=1), tmp_path / "q")
    again = select_t2i(run.catalog, T2IData(quotas={"mw": 7}, seed=1), tmp_path / "q2")
    assert quota["selected"] == 7 == again["selected"]
    uids = lambda d: duckdb.sql(f"SELECT list(uid ORDER BY uid) FROM '{tmp_path / d}/subset.parquet'").fetchall()[0][0]  # noqa: E731
    assert uids("q") == uids("q2") and set(uids("q")) <= {r["uid"] for r in rows}
    # G.2 per source: a source whose rule is off passes whole (SAM, JourneyDB, ImageNet-1K)
    whole = select_t2i(run.catalog, T2IData(sources={"mw": SubsetRule(min_side=None, aesthetic_min=None)}),
                       tmp_path / "whole")
    assert whole["selected"] == query("SELECT count(*) FROM images", run.catalog).fetchall()[0][0] > expected
    strict = select_t2i(run.catalog, T2IData(sources={"mw": SubsetRule(min_side=700, aesthetic_min=None)}),
                        tmp_path / "strict")
    assert strict["selected"] == query("SELECT count(*) FROM images WHERE least(width, height) > 700",
                                       run.catalog).fetchall()[0][0]


@pytest.fixture(scope="module")
def subset(curated, tmp_path_factory):
    _, _, run = curated
    out = tmp_path_factory.mktemp("subset")
    select_t2i(run.catalog, T2IData(), out)
    return out / "subset.parquet"


@pytest.fixture(scope="module")
def captioner():
    from lumos.caption.internvl import CaptionSettings, Captioner
    return Captioner(CaptionSettings(model=None, max_new_tokens=6, batch_size=8, precision="fp32"))


def test_killed_captioning_resumes_to_the_same_parquet(subset, captioner, tmp_path):
    whole = caption_subset(subset, tmp_path / "whole", captioner)
    assert whole["images_captioned"] == pq.read_metadata(subset).num_rows and whole["images_per_s"] > 0
    first = caption_subset(subset, tmp_path / "cut", captioner, stop_after=1)  # killed after a shard
    assert first["shards_captioned"] == 1 and not (tmp_path / "cut/captions.parquet").exists()
    rest = caption_subset(subset, tmp_path / "cut", captioner)
    assert rest["shards_cached"] == 1 and rest["shards_captioned"] == whole["shards_captioned"] - 1
    a = pq.read_table(tmp_path / "whole/captions.parquet")
    b = pq.read_table(tmp_path / "cut/captions.parquet")
    assert a.equals(b)
    uids = a.column("uid").to_pylist()
    assert len(uids) == len(set(uids)) == pq.read_metadata(subset).num_rows
    row = a.slice(0, 1).to_pylist()[0]
    assert row["model_id"] == "lumos-tiny-internvl" and row["prompt"] == captioner.settings.prompt
    assert json.loads(row["generation"])["max_new_tokens"] == 6
    again = caption_subset(subset, tmp_path / "whole", captioner)
    assert again["shards_captioned"] == 0


KILLABLE = """
import sys
from lumos.caption.captions import caption_subset
from lumos.caption.internvl import CaptionSettings, Captioner
subset, out = sys.argv[1:]
caption_subset(subset, out, Captioner(CaptionSettings(model=None, max_new_tokens=48, batch_size=4,
                                                       precision="fp32")))
"""


def test_kill_9_mid_captioning_then_rerun_gives_the_same_parquet(subset, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "caption.py"
    script.write_text(KILLABLE)
    runs = {}
    for name in ("killed", "whole"):
        args = [sys.executable, str(script), str(subset), str(tmp_path / name)]
        if name == "killed":
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 120
            while time.time() < deadline and not list((tmp_path / name / "parts").glob("*.parquet")):
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)  # mid-run: the first shard is done, the next is not
            proc.wait()
            assert not (tmp_path / name / "captions.parquet").exists()
        subprocess.run(args, check=True, capture_output=True)
        runs[name] = pq.read_table(tmp_path / name / "captions.parquet")
    assert runs["killed"].equals(runs["whole"])
    uids = runs["whole"].column("uid").to_pylist()
    assert len(uids) == len(set(uids)) == pq.read_metadata(subset).num_rows


def test_t5_cache_holds_both_caption_kinds(subset, captioner, tmp_path):
    caption_subset(subset, tmp_path / "cap", captioner)
    enc = T5TextEncoder.from_config(TextEncoder(pretrained=None, max_length=24, precision="fp32"))
    stats = extract_text_features(subset, tmp_path / "cap/captions.parquet", tmp_path / "t5", enc, 16,
                                  "fp16", {"t": 1})
    assert stats["computed"] >= 1 and stats["seconds_per_sample"] > 0
    file = sorted((tmp_path / "t5").glob("*.safetensors"))[0]
    with safe_open(str(file), framework="pt") as f:
        keys = json.loads(f.metadata()["keys"])
        raw, mask, has_long = f.get_tensor("raw_emb"), f.get_tensor("raw_mask"), f.get_tensor("has_long")
        long = f.get_tensor("long_emb")
    assert raw.shape == long.shape == (len(keys), 24, enc.width) and raw.dtype == torch.float16
    assert mask.shape == (len(keys), 24) and bool(has_long.all())
    text = duckdb.sql(f"SELECT raw_caption FROM '{subset}' WHERE uid = '{keys[0]}'").fetchall()[0][0]
    emb, m = enc([text])
    assert torch.allclose(raw[0].float(), emb[0], atol=1e-2) and torch.equal(mask[0].long(), m[0].long())
    assert extract_text_features(subset, tmp_path / "cap/captions.parquet", tmp_path / "t5", enc, 16,
                                 "fp16", {"t": 1})["computed"] == 0
