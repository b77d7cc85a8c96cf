"""Streamed training input: disjoint per rank and per worker, exact position resume, fsspec URLs,
caches in the params' precision, bounded to a few shards."""

from __future__ import annotations

import json
from itertools import islice

import fsspec
import pytest
import torch

from lumos.data.features import write_feature_shard
from lumos.data.stream import FeatureStream, list_shards, read_header, worker_skip

SHARDS, ROWS = 4, 4


def _write(root: str, shards: int = SHARDS, rows: int = ROWS, dtype=None) -> None:
    for s in range(shards):
        n = torch.arange(rows, dtype=torch.float32) + 100 * s  # a sample's value names it
        tensors = {"latent_mean": n.view(-1, 1, 1, 1).expand(rows, 4, 2, 2).clone(),
                   "latent_std": torch.ones(rows, 4, 2, 2), "condition": n.view(-1, 1, 1).expand(rows, 3, 8).clone()}
        write_feature_shard(f"{root}/s{s:02d}.safetensors", [f"k{s}-{i}" for i in range(rows)], tensors, {},
                            dtype=dtype)


def _ids(batches) -> list[int]:
    return [int(v) for b in batches for v in b["latent_mean"][:, 0, 0, 0]]


@pytest.fixture
def cache(tmp_path):
    _write(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_read_disjoint_samples_and_cover_the_cache(cache, monkeypatch, workers):
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        data = FeatureStream(cache)
        # One epoch: each rank gets 2 of the 4 shards = 8 samples = 4 micro-batches of 2.
        seen.append(_ids(islice(data.loader(2, seed=0, workers=workers), 4)))
    assert set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(100 * s + i for s in range(SHARDS) for i in range(ROWS))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_a_position_continues_the_same_stream(cache, workers):
    data = FeatureStream(cache)
    whole = list(islice(data.loader(2, seed=3, workers=workers), 12))
    for consumed in (1, 5, 8):
        tail = list(islice(FeatureStream(cache).loader(2, seed=3, consumed=consumed, workers=workers), 12 - consumed))
        assert _ids(tail) == _ids(whole[consumed:])
    assert _ids(whole[:8]) != _ids(list(islice(data.loader(2, seed=4, workers=workers), 8)))  # seeded


def test_worker_skip_is_the_round_robin_share():
    assert [worker_skip(7, w, 3) for w in range(3)] == [3, 2, 2]
    assert worker_skip(5, 0, 0) == 5


def test_memory_url_fp16_cache_and_max_samples():
    root = "memory://lumos-test-stream"
    _write(root, shards=3, dtype="fp16")
    urls = list_shards(root)
    assert [u.rsplit("/", 1)[-1] for u in urls] == ["s00.safetensors", "s01.safetensors", "s02.safetensors"]
    assert read_header(urls[0])["latent_mean"]["dtype"] == "F16"  # stored in the params' precision
    data = FeatureStream(root, max_samples=6)
    assert len(data) == 6
    assert data.shapes == {"latent_mean": (4, 2, 2), "latent_std": (4, 2, 2), "condition": (3, 8)}
    batches = list(islice(data.loader(3, seed=0, workers=0), 2))
    assert batches[0]["latent_mean"].dtype == torch.float16
    chosen = sorted(_ids(batches))  # one epoch: each of the 6 once
    assert len(set(chosen)) == 6 and data.keys_head(1)[0] == f"k{min(chosen) // 100}-{min(chosen) % 100}"
    # Fig. 2b's data scale: a seeded random subset (the same for the seed, not the first N)
    again = sorted(_ids(islice(FeatureStream(root, max_samples=6).loader(3, seed=5, workers=0), 2)))
    other = sorted(_ids(islice(FeatureStream(root, max_samples=6, subset_seed=1).loader(3, seed=0, workers=0), 2)))
    assert again == chosen and other != chosen and {chosen[0], other[0]} != {0}
    # labels: only the labelled keys are read, and batches carry their labels
    labels = {"k0-1": 3, "k1-2": 1, "k2-0": 2}
    labelled = next(iter(FeatureStream(root, labels=labels).loader(3, seed=0, workers=0)))
    assert sorted(zip(_ids([labelled]), labelled["label"].tolist())) == [(1, 3), (102, 1), (200, 2)]
    with pytest.raises(ValueError, match="wanted keys"):
        FeatureStream(root, labels={"nope": 0})
    fsspec.filesystem("memory").rm("/lumos-test-stream", recursive=True)


def test_no_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no feature shards"):
        FeatureStream(tmp_path)


def test_t2i_stream_joins_t5_by_uid_inside_one_bucket(tmp_path):
    from safetensors.torch import save_file

    from lumos.data.t2i import T2IStream, _save

    files = {"a--32x32": [0, 1, 2], "a--32x48": [3, 4], "b--32x32": [5, 6]}
    for name, uids in files.items():
        h, w = map(int, name.rsplit("--", 1)[1].split("x"))
        n = torch.tensor(uids, dtype=torch.float32)
        _save(tmp_path / "lat" / f"{name}.safetensors",
              {"latent_mean": n.view(-1, 1, 1, 1).expand(-1, 4, h // 8, w // 8).clone(),
               "latent_std": torch.ones(len(uids), 4, h // 8, w // 8)}, [f"u{u}" for u in uids], {"bucket": [h, w]})
    (tmp_path / "t5").mkdir()
    for name, uids in {"a": [4, 2, 0, 3, 1], "b": [6, 5]}.items():  # another order than the latents
        n = torch.tensor(uids, dtype=torch.float32)
        save_file({"raw_emb": n.view(-1, 1, 1).expand(-1, 5, 16).clone(), "long_emb": torch.zeros(len(uids), 5, 16),
                   "raw_mask": torch.ones(len(uids), 5, dtype=torch.int8),
                   "long_mask": torch.ones(len(uids), 5, dtype=torch.int8),
                   "has_long": torch.zeros(len(uids), dtype=torch.bool)},
                  str(tmp_path / "t5" / f"{name}.safetensors"), metadata={"keys": json.dumps([f"u{u}" for u in uids])})
    data = T2IStream(tmp_path / "lat", tmp_path / "t5")
    assert data.buckets == [(32, 32), (32, 48)] and data.text_width == (5, 16) and len(data) == 7
    assert data.shapes["latent_mean"] == (4, 4, 4)
    for b in islice(data.loader(2, seed=0, workers=0), 12):  # several epochs
        assert torch.equal(b["raw_emb"][:, 0, 0], b["latent_mean"][:, 0, 0, 0])  # the uid's own caption


def test_nvs_stream_pairs_equal_the_in_memory_pairs(tmp_path):
    from safetensors.torch import save

    from lumos.data.nvs import NVSObjects, NVSStream

    g = torch.Generator().manual_seed(0)
    for o in range(2):
        t = {"latent_mean": torch.randn(3, 4, 2, 2, generator=g), "latent_std": torch.rand(3, 4, 2, 2, generator=g),
             "condition": torch.randn(3, 1, 8, generator=g), "w2c": torch.randn(3, 4, 4, generator=g)}
        (tmp_path / f"obj{o}.safetensors").write_bytes(save(t, metadata={"meta": "{}"}))
    stream, memory = NVSStream(tmp_path), NVSObjects(tmp_path)
    assert len(stream) == len(memory) == 12 and stream.views == 3
    for b in islice(stream.loader(4, seed=1, workers=0), 3):
        k = (b["_sample"] >> 32) * 6 + (b["_sample"] & (2**32 - 1))
        ref = memory.batch(k)
        assert all(torch.allclose(b[n], ref[n]) for n in ref)


def test_streamed_run_stopped_and_resumed_equals_the_uninterrupted_run(cache, tmp_path):
    from safetensors.torch import load_file

    from lumos.config import Optimizer
    from lumos.diffusion import GaussianDiffusion
    from lumos.tasks.i2i import I2ITask
    from lumos.train.loop import RunSpec, train

    spec = RunSpec(steps=6, global_batch=4, micro_batch=2, ema_decay=0.9, seed=0, checkpoint_every=2,
                   optimizer=Optimizer(lr=1e-3, weight_decay=0.03, warmup_steps=2, grad_clip=1.0),
                   precision="fp32", zero_stage=2, log_every=2, keep_last=1, loader_workers=1)
    task = I2ITask(FeatureStream(cache), "tiny", 0.1, GaussianDiffusion())
    whole = train(task, spec, tmp_path / "whole", {"run": 1})
    part = train(task, spec, tmp_path / "part", {"run": 1}, stop_after=3)  # position 3 x 2 micro-batches
    resumed = train(task, spec, tmp_path / "part", {"run": 1})
    assert part["step"] == 3 and resumed["losses"] == pytest.approx(whole["losses"], abs=1e-6)
    a = load_file(str(tmp_path / "whole/checkpoints/step-0000006/model.safetensors"))
    b = load_file(str(tmp_path / "part/checkpoints/step-0000006/model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [p.name for p in (tmp_path / "part/checkpoints").iterdir()] == ["step-0000006"]  # keep_last: 1
