"""caption and features-t5 on a real local Ray (2 CPUs): the same parts, captions and T5 files as
one process, streamed in bounded decode batches; features-t2i's worker streamed like them."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from lumos.caption.captions import caption_subset
from lumos.caption.internvl import CaptionSettings, Captioner, provenance
from lumos.config import TextEncoder
from lumos.data.text_features import extract_text_features
from lumos.encoders.t5 import T5TextEncoder
from test_ray_stages import write_shards

SETTINGS = CaptionSettings(model=None, max_new_tokens=5, batch_size=4, precision="fp32")
T5 = TextEncoder(pretrained=None, max_length=16, precision="fp32")


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    """A T2I subset over 2 shards of 10 images (the truncated and the huge one left out)."""
    root = tmp_path_factory.mktemp("t2i")
    dl = write_shards(root / "dl", shards=2, per_shard=10, side=64)
    rows = [(f"u{tar.stem}{i:04d}", f"{tar.stem}{i:04d}", "s", str(tar), f"{tar.stem}{i:04d}.jpg",
             f"a red circle {i}") for tar in sorted((dl / "shards").glob("*.tar")) for i in range(10) if i not in (1, 2)]
    con = duckdb.connect()
    con.execute("CREATE TABLE s (uid VARCHAR, key VARCHAR, source VARCHAR, shard VARCHAR, member VARCHAR, "
                "raw_caption VARCHAR)")
    con.executemany("INSERT INTO s VALUES (?,?,?,?,?,?)", rows)
    con.execute(f"COPY s TO '{root / 'subset.parquet'}' (FORMAT parquet)")
    return root / "subset.parquet"


def test_caption_on_ray_matches_one_process_in_bounded_batches(subset, tmp_path, ray_cluster, monkeypatch):
    local = caption_subset(subset, tmp_path / "local", Captioner(SETTINGS, "cpu"), decode_batch=3)
    seen = []
    on_ray = caption_subset(subset, tmp_path / "ray", build=partial(Captioner, SETTINGS, "cpu"),
                            generation=provenance(SETTINGS, "cpu"), decode_batch=3, device="auto",
                            ray=ray_cluster, on_shard=lambda done, total, r: seen.append((done, total)))
    assert local["shards_captioned"] == on_ray["shards_captioned"] == 2
    assert local["images_captioned"] == on_ray["images_captioned"] == 16 and seen == [(1, 2), (2, 2)]
    a, b = pq.read_table(tmp_path / "local/captions.parquet"), pq.read_table(tmp_path / "ray/captions.parquet")
    assert a.equals(b) and a.num_rows == 16
    assert len(set(a.column("long_caption").to_pylist())) > 1  # the images' own captions
    # provenance without the model is what the built captioner reports
    assert json.loads(a.column("generation")[0].as_py()) == Captioner(SETTINGS, "cpu").generation_config()
    # bounded: a shard of 8 images goes to the model 3 at a time, in tar order, back in uid order
    batches = []
    real = Captioner.caption
    monkeypatch.setattr(Captioner, "caption", lambda self, ims: batches.append(len(ims)) or real(self, ims))
    whole = caption_subset(subset, tmp_path / "whole", Captioner(SETTINGS, "cpu"), decode_batch=3)
    assert max(batches) == 3 and sum(batches) == 16 and whole["shards_captioned"] == 2
    assert pq.read_table(tmp_path / "whole/captions.parquet").equals(a)
    # a rerun skips both shards Ray wrote (the worker's own check; in process: no second actor start-up)
    again = caption_subset(subset, tmp_path / "ray", build=partial(Captioner, SETTINGS, "cpu"),
                           generation=provenance(SETTINGS, "cpu"))
    assert again["shards_cached"] == 2 and again["shards_captioned"] == 0


def test_t5_cache_on_ray_matches_one_process(subset, tmp_path, ray_cluster):
    caption_subset(subset, tmp_path / "cap", Captioner(SETTINGS, "cpu"), decode_batch=8)
    captions = tmp_path / "cap/captions.parquet"
    local = extract_text_features(subset, captions, tmp_path / "local", T5TextEncoder.from_config(T5), 5,
                                  "fp16", {"t": 1})
    on_ray = extract_text_features(subset, captions, tmp_path / "ray", batch_size=5, precision="fp16",
                                   fingerprint={"t": 1}, build=partial(T5TextEncoder.from_config, T5),
                                   device="auto", ray=ray_cluster)
    assert local["computed"] == on_ray["computed"] == 2 and local["samples"] == on_ray["samples"] == 16
    files = sorted(p.name for p in (tmp_path / "local").glob("*.safetensors"))
    assert files == sorted(p.name for p in (tmp_path / "ray").glob("*.safetensors")) and len(files) == 2
    long = dict(duckdb.sql(f"SELECT uid, long_caption FROM '{captions}'").fetchall())
    enc = T5TextEncoder.from_config(T5)
    for name in files:
        a, b = load_file(tmp_path / "local" / name), load_file(tmp_path / "ray" / name)
        assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=2e-3) for k in a)
        assert a["long_emb"].dtype == torch.float16 and bool(a["has_long"].all())
    # the long captions were taken from the shard's own caption part: the right text per uid
    keys = duckdb.sql(f"SELECT uid FROM '{subset}' ORDER BY shard, key").fetchall()
    first = load_file(tmp_path / "ray" / files[0])
    emb, _ = enc([long[keys[0][0]]])
    assert torch.allclose(first["long_emb"][0].float(), emb[0], atol=1e-2)
    assert extract_text_features(subset, captions, tmp_path / "ray", batch_size=5, precision="fp16",
                                 fingerprint={"t": 1}, build=partial(T5TextEncoder.from_config, T5)
                                 )["cached"] == 2


def test_t2i_latents_streamed_in_bounded_batches_match_whole_shards(subset, tmp_path):
    """The LatentWorker (what a Ray actor runs; Ray itself is covered by caption and T5 above):
    3 images decoded at a time give the latents of a whole shard at once, bucket by bucket."""
    from lumos.config import VAE
    from lumos.data.t2i import extract_t2i_latents
    from lumos.encoders import build_vae

    build = partial(build_vae, VAE(pretrained=None))
    args = (build, 32, True, 2, {"v": 1}, 16)
    streamed = extract_t2i_latents(subset, tmp_path / "streamed", *args, decode_batch=3)
    whole = extract_t2i_latents(subset, tmp_path / "whole", *args, decode_batch=64)
    assert streamed == whole == {"computed": 2, "cached": 0, "samples": 16}
    names = sorted(p.name for p in (tmp_path / "streamed").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert len([n for n in names if n.endswith(".done.json")]) == 2
    for name in (n for n in names if n.endswith(".safetensors")):
        a, b = (load_file(tmp_path / d / name) for d in ("streamed", "whole"))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert extract_t2i_latents(subset, tmp_path / "streamed", *args)["cached"] == 2
