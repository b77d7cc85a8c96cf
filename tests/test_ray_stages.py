"""Score and features-i2i on a real local Ray (2 CPUs): the same outputs as in one process,
streamed in bounded batches, and a worker killed mid-stage loses or duplicates nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import tarfile
import threading
import time
from functools import partial
from pathlib import Path

import duckdb
import psutil
import pyarrow.parquet as pq
import torch
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

from lumos.config import VAE, Aesthetic, ScoreSettings, VisionEncoder, load_params
from lumos.curation.catalog import build_catalog
from lumos.curation.score import score_source
from lumos.data.extract import extract_features
from lumos.runtime import storage
from lumos.tasks.i2i_stages import build_encoders

SETTINGS = ScoreSettings(max_pixels=200_000, aesthetic=Aesthetic(
    clip_model="lumos-tiny-clip", clip_pretrained=None, batch_size=4))


def _jpeg(seed: int, w: int, h: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    arr = (torch.rand(h // 8, w // 8, 3, generator=g) * 255).byte().repeat_interleave(8, 0).repeat_interleave(8, 1)
    buf = io.BytesIO()
    Image.fromarray(arr.numpy()).save(buf, "JPEG")
    return buf.getvalue()


def write_shards(root: Path, shards: int, per_shard: int, side: int = 96) -> Path:
    """img2dataset's layout: shards/<n>.tar (jpg + json per sample) and <n>_stats.json last;
    one truncated and one too-large image per shard."""
    (root / "shards").mkdir(parents=True)
    for s in range(shards):
        with tarfile.open(root / "shards" / f"{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                data = _jpeg(s * 1000 + i, side + 8 * (i % 3), side)
                if i == 1:
                    data = data[: len(data) // 2]
                if i == 2:
                    data = _jpeg(i, 640, 640)  # 409600 px > max_pixels
                for ext, payload in (("jpg", data), ("json", json.dumps({"uid": f"u{key}"}).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        (root / "shards" / f"{s:05d}_stats.json").write_text("{}")
    return root


def _tables(folder: Path) -> dict:
    return {p.name: pq.read_table(p).to_pylist() for p in sorted(folder.glob("*.parquet"))}


def test_score_on_ray_matches_one_process(tmp_path, ray_cluster):
    dl = write_shards(tmp_path / "dl", shards=3, per_shard=10)
    local = score_source(dl, tmp_path / "local", SETTINGS, decode_batch=4)
    seen = []
    on_ray = score_source(dl, tmp_path / "ray", SETTINGS, ray=ray_cluster, decode_batch=4,
                          on_shard=lambda done, total, outcome: seen.append((done, total, outcome)))
    assert local == on_ray == {"scored": 3, "cached": 0}
    assert [s[:2] for s in seen] == [(1, 3), (2, 3), (3, 3)]  # per-shard progress
    tables = _tables(tmp_path / "local")
    assert tables == _tables(tmp_path / "ray") and len(tables) == 3
    rows = tables["00000.parquet"]
    assert [r["key"] for r in rows] == [f"00000{i:04d}" for i in range(10)]
    assert rows[1]["decode_error"] == "truncated image"
    assert rows[2]["decode_error"].startswith("too many pixels")
    assert all(r["predicted_aesthetic"] is not None for r in rows if r["decode_error"] is None)
    for stamp in (tmp_path / "local").glob("*.json"):
        assert stamp.read_text() == (tmp_path / "ray" / stamp.name).read_text()
    # a rerun on Ray skips every shard
    assert score_source(dl, tmp_path / "ray", SETTINGS, ray=ray_cluster) == {"scored": 0, "cached": 3}


def test_streamed_score_holds_one_batch_of_decoded_images(tmp_path, monkeypatch):
    """Bounded memory: however long the shard, no more than decode_batch images are decoded at once."""
    from lumos.curation import score

    dl = write_shards(tmp_path / "dl", shards=1, per_shard=30)
    batches = []
    real = score.AestheticScorer.__call__
    monkeypatch.setattr(score.AestheticScorer, "__call__",
                        lambda self, images: batches.append(len(images)) or real(self, images))
    score_source(dl, tmp_path / "out", SETTINGS, decode_batch=5)
    assert max(batches) <= 5 and sum(batches) == 28  # 30 minus the truncated and the huge one


def _catalog(tmp_path: Path, dl: Path) -> Path:
    """A catalog whose `images` view lists every decodable sample of the shards."""
    keep, select = tmp_path / "keep" / "s", tmp_path / "select" / "s"
    keep.mkdir(parents=True)
    select.mkdir(parents=True)
    rows = []
    for tar in sorted((dl / "shards").glob("*.tar")):
        for i in range(10):
            if i in (1, 2):
                continue
            key = f"{tar.stem}{i:04d}"
            rows.append((key, "s", str(tar), f"{key}.jpg", 96, 96, 6.0, "c", "kept", f"u{key}", "http://x",
                         int.from_bytes(hashlib.sha256(key.encode()).digest()[:8])))  # random: no near-dups
    con = duckdb.connect()
    con.execute("CREATE TABLE k (key VARCHAR, source VARCHAR, shard VARCHAR, member VARCHAR, width BIGINT, "
                "height BIGINT, aesthetic DOUBLE, caption VARCHAR, status VARCHAR, uid VARCHAR, url VARCHAR, "
                "phash UBIGINT)")
    con.executemany("INSERT INTO k VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.execute(f"COPY k TO '{keep / 'kept.parquet'}' (FORMAT parquet)")
    empty = "SELECT 'x' uid, 's' source, 'u' url, 'keep' stage, 'r' reason WHERE false"
    con.execute(f"COPY ({empty}) TO '{keep / 'rejects.parquet'}' (FORMAT parquet)")
    con.execute(f"COPY ({empty}) TO '{select / 'rejects.parquet'}' (FORMAT parquet)")
    build_catalog(tmp_path / "select", tmp_path / "keep", tmp_path / "catalog.duckdb",
                  load_params(ROOT / "params.yaml").active.curation)  # source "s": no quota, no rule
    return tmp_path / "catalog.duckdb"


BUILD = partial(build_encoders, VAE(pretrained=None), VisionEncoder(pretrained=None, resolution=32))


def test_features_on_ray_match_one_process(tmp_path, ray_cluster):
    dl = write_shards(tmp_path / "dl", shards=2, per_shard=10)
    catalog = _catalog(tmp_path, dl)
    args = (BUILD, 32, 3, {"v": 1})
    local = extract_features(catalog, tmp_path / "local", *args, device="cpu")
    on_ray = extract_features(catalog, tmp_path / "ray", *args, device="auto", ray=ray_cluster)
    assert local == on_ray == {"computed": 2, "cached": 0, "samples": 16}
    files = sorted(p.name for p in (tmp_path / "local").glob("*.safetensors"))
    assert files == sorted(p.name for p in (tmp_path / "ray").glob("*.safetensors")) and len(files) == 2
    for name in files:
        a, b = load_file(tmp_path / "local" / name), load_file(tmp_path / "ray" / name)
        # equal up to float summation order (a Ray worker runs torch with 1 thread)
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
        assert a["latent_mean"].shape[0] == 8 and a["condition"].ndim == 3
    # batches of 3 in tar order come back in catalog order: same as encoding all at once
    whole = extract_features(catalog, tmp_path / "whole", BUILD, 32, 64, {"v": 1}, device="cpu")
    assert whole["computed"] == 2
    for name in files:
        a, b = load_file(tmp_path / "local" / name), load_file(tmp_path / "whole" / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert extract_features(catalog, tmp_path / "ray", *args, ray=ray_cluster)["cached"] == 2


def _kill_one_running(title: str, killed: list, stop: threading.Event) -> None:
    """SIGKILL the first worker of this session's Ray (a descendant of this process) seen running
    ``title`` (Ray's process title), by its pid."""
    me = psutil.Process(os.getpid())
    while not stop.is_set() and not killed:
        for proc in me.children(recursive=True):
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if cmd.startswith(title):
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                return
        time.sleep(0.05)


def test_a_killed_worker_loses_and_duplicates_nothing(tmp_path, ray_cluster):
    dl = write_shards(tmp_path / "dl", shards=3, per_shard=24, side=160)
    reference = tmp_path / "reference"
    score_source(dl, reference, SETTINGS, decode_batch=4)
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_one_running, args=("ray::ShardHost.run", killed, stop))
    killer.start()
    try:
        counts = score_source(dl, tmp_path / "ray", SETTINGS, ray=ray_cluster, decode_batch=4)
    finally:
        stop.set()
        killer.join()
    assert killed, "no running score worker was seen to kill"
    assert counts == {"scored": 3, "cached": 0}
    assert _tables(tmp_path / "ray") == _tables(reference)  # every row once, none lost
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in reference.iterdir())


def test_storage_glob_and_atomic_write_on_local_paths(tmp_path):
    storage.write_bytes_atomic(tmp_path / "a" / "x.bin", b"123")
    assert storage.glob(tmp_path / "a", "*.bin") == [str(tmp_path / "a" / "x.bin")]
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temporaries
    assert storage.split_member("d/000.jpg") == ("d/000", "jpg")
    assert storage.split_member("000.JSON") == ("000", "json")


def test_evaluate_i2v_on_two_ray_workers_matches_one_process(params, tmp_path, ray_cluster):
    """evaluate-i2v's clips as generation units (lumos/eval/generation.py) on 2 Ray workers: the
    same metrics JSON as in one process (1 torch thread, as a 1-CPU worker); a broken clip first,
    so a wave is sent again with the seeds shifted. After the score/features tests, the hosts are warm."""
    from lumos.demo.heldout import _ucf101
    from lumos.eval.stages import run_evaluate_i2v
    from lumos.models import VideoDiT

    from conftest import perturbed, without_run_outputs
    from test_eval_nvs_i2v import _args, _checkpoint

    ucf = tmp_path / "mini-world" / "ucf101"  # a stand-in path
    _ucf101(ucf, 3, 0)
    (sorted(ucf.iterdir())[0] / "v_Broken_g01_c00.avi").write_bytes(b"not a video")  # sorted first
    p = without_run_outputs(params.active)
    proto = p.eval.videos["ucf101"].model_copy(update={"reference": str(ucf), "samples": 2, "frames": 4})
    profile = p.model_copy(update={"eval": p.eval.model_copy(update={"videos": {"ucf101": proto}, "kid_subsets": 2}),
                                   "diffusion": p.diffusion.model_copy(update={"sample_steps": 2})})
    args = _args(profile, profile.i2v.resolution, max_frames=profile.i2v.frames)
    torch.manual_seed(0)
    _checkpoint(tmp_path / "models/i2v", "video", perturbed(VideoDiT(**args)), args)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray worker of 1 CPU runs torch on 1 thread: the same float sums
    try:
        local = run_evaluate_i2v(profile.model_copy(update={"ray": None}), tmp_path / "models/i2v", tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    on_ray = run_evaluate_i2v(profile.model_copy(update={"ray": ray_cluster}), tmp_path / "models/i2v",
                              tmp_path / "ray")
    assert ray_cluster.in_process_max_units == 0 and local == on_ray  # every clip went to a Ray worker
    assert (tmp_path / "local/i2v.json").read_text() == (tmp_path / "ray/i2v.json").read_text()
    entry = json.loads((tmp_path / "ray/i2v.json").read_text())["ucf101"]
    assert entry["skipped"] == 1 and entry["samples"] == 2 and entry["fvd"] > 0 and 0 < entry["pic"] <= 1
    assert not (tmp_path / "ray/.units").exists()  # filed unit results go once the metrics are written
