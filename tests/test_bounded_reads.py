"""sample-i2v / sample-nvs read only what they draw: the first N samples or objects of a cache,
never the whole cache (a later shard is not even opened)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from lumos.data.features import FeatureShards, write_feature_shard
from lumos.data.nvs import NVSObjects


def _shard(path, keys, offset):
    n = len(keys)
    tensors = {"latent_mean": torch.arange(n * 4.0).view(n, 4) + offset, "latent_std": torch.ones(n, 4),
               "condition": torch.full((n, 2, 3), float(offset))}
    write_feature_shard(path, keys, tensors, {})


def test_feature_shards_read_only_the_first_samples(tmp_path):
    _shard(tmp_path / "a.safetensors", ["a0", "a1", "a2"], 0)
    _shard(tmp_path / "b.safetensors", ["b0", "b1", "b2"], 100)
    whole = FeatureShards(tmp_path)
    (tmp_path / "c.safetensors").write_bytes(b"not a safetensors file")  # never opened below
    head = FeatureShards(tmp_path, first=4)
    assert head.keys == whole.keys[:4] == ["a0", "a1", "a2", "b0"]
    assert all(torch.equal(head.tensors[k], whole.tensors[k][:4]) for k in whole.tensors)
    assert FeatureShards(tmp_path, first=2).keys == ["a0", "a1"]


def test_nvs_objects_read_only_the_first_objects(tmp_path):
    for i, uid in enumerate(["o1", "o2", "o3"]):
        tensors = {"latent_mean": torch.full((3, 4, 2, 2), float(i)), "latent_std": torch.ones(3, 4, 2, 2),
                   "condition": torch.zeros(3, 1, 5), "w2c": torch.eye(4).repeat(3, 1, 1)}
        save_file(tensors, str(tmp_path / f"{uid}.safetensors"), metadata={"meta": json.dumps({"uid": uid})})
    (tmp_path / "o4.safetensors").write_bytes(b"broken")  # a later object: never opened
    head = NVSObjects(tmp_path, first=2)
    assert head.uids == ["o1", "o2"] and head.tensors["latent_mean"].shape == (2, 3, 4, 2, 2)
    assert head.tensors["latent_mean"][1].unique().tolist() == [1.0] and head.meta[1]["uid"] == "o2"


class _Pid:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def run(self, job: int) -> tuple:
        import os

        return self.tag, job, os.getpid()


def test_a_stage_of_few_shards_may_skip_ray():
    """ray.in_process_max_shards: a stage of at most that many shards runs in this process."""
    import os

    from lumos.config import RaySettings
    from lumos.runtime.ray import run_shards

    seen = []
    out = run_shards(_Pid, ("t",), [1, 2], RaySettings(in_process_max_shards=2),
                     on_done=lambda done, total, r: seen.append((done, total)))
    assert out == [("t", 1, os.getpid()), ("t", 2, os.getpid())] and seen == [(1, 2), (2, 2)]
    assert run_shards(_Pid, ("t",), [], None) == []
