"""`datasets` on a bucket of a real S3 API server on 127.0.0.1 (moto's server mode, through s3fs):
img2dataset writes its shards there, score and features-i2i stream them from it on Ray, and every
shard lands whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import boto3
import fsspec
import pytest
from moto.server import ThreadedMotoServer

from lumos.config import VAE, Source, VisionEncoder
from lumos.curation.catalog import build_catalog, query
from lumos.curation.download import download_source
from lumos.curation.keep import keep_source
from lumos.curation.score import score_source
from lumos.curation.select import select_source
from lumos.data.extract import extract_features, remote_feature_meta
from lumos.demo import build_mini_world, serve_mini_world
from lumos.runtime import storage
from lumos.tasks.i2i_stages import build_encoders

from conftest import free_port

BUCKET = "lumos-test"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bucket(monkeypatch):
    """A moto S3 server on a free loopback port with one bucket; fsspec/s3fs (here, in
    img2dataset's workers and in Ray workers) reach it through the environment."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1",
                       "FSSPEC_S3": json.dumps({"client_kwargs": {"endpoint_url": endpoint}})}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"endpoint_url": endpoint}})
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    fsspec.filesystem("s3").invalidate_cache()
    yield f"s3://{BUCKET}"
    fsspec.filesystem("s3").clear_instance_cache()
    server.stop()


def test_curation_and_features_with_datasets_on_a_bucket(tmp_path, params, bucket, ray_cluster):
    world = params.active.mini_world.model_copy(update={
        "base_url": f"http://127.0.0.1:{free_port()}", "n_images": 60, "parts": ["images"]})
    root = tmp_path / "mw"
    build_mini_world(world, root)
    cfg = params.active.curation
    cfg = cfg.model_copy(update={"download": cfg.download.model_copy(update={"samples_per_shard": 20})})
    source = Source(name="mw", reader="laion", metadata=str(root / "metadata.parquet"))
    download, scores = f"{bucket}/curation/download/mw", f"{bucket}/curation/scores/mw"

    select_source(cfg, source, tmp_path / "select" / "mw")
    with serve_mini_world(root, world.base_url):
        status = download_source(tmp_path / "select" / "mw" / "selected.parquet", download, cfg.download)
    assert status["shards"] >= 2 and status["status"]["success"] > 0
    assert storage.glob(download, "shards/*.tar")[0].startswith(f"{bucket}/curation/download/mw/shards/")

    counts = score_source(download, scores, cfg.score, ray=ray_cluster, decode_batch=8)
    assert counts == {"scored": status["shards"], "cached": 0}
    stats = keep_source(tmp_path / "select" / "mw" / "selected.parquet", download, scores,
                        tmp_path / "keep" / "mw", cfg.keep)
    assert stats["kept"] > 0
    build_catalog(tmp_path / "select", tmp_path / "keep", tmp_path / "catalog.duckdb", cfg)
    shards = [r[0] for r in query("SELECT DISTINCT shard FROM images", tmp_path / "catalog.duckdb").fetchall()]
    assert shards and all(s.startswith(f"{download}/shards/") for s in shards)

    features = f"{bucket}/features/i2i"
    build = partial(build_encoders, VAE(pretrained=None), VisionEncoder(pretrained=None, resolution=32))
    result = extract_features(tmp_path / "catalog.duckdb", features, build, 32, 8, {"v": 1}, ray=ray_cluster)
    in_catalog = query("SELECT count(*) FROM images", tmp_path / "catalog.duckdb").fetchall()[0][0]
    assert 0 < in_catalog <= stats["kept"]  # the catalog's cross-source dedup drops the planted copies
    assert result == {"computed": len(shards), "cached": 0, "samples": in_catalog}
    written = storage.glob(features, "*.safetensors")
    assert len(written) == len(shards)
    assert sum(len(remote_feature_meta(w)["keys"]) for w in written) == in_catalog
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    names = [p.rsplit("/", 1)[1] for p in fs.find(BUCKET)]
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]  # no half-written shard
    # a rerun computes nothing
    assert extract_features(tmp_path / "catalog.duckdb", features, build, 32, 8, {"v": 1},
                            ray=ray_cluster)["cached"] == len(shards)


def _shard_contents(folder) -> dict[str, dict[str, bytes]]:
    """{shard name: {member: bytes}} of an img2dataset output (member order within a tar is
    the threads' completion order, so members are compared as a mapping)."""
    import tarfile

    out = {}
    for tar in sorted(folder.glob("shards/*.tar")):
        with tarfile.open(tar) as t:
            out[tar.name] = {m.name: t.extractfile(m).read() for m in t if m.isfile()}
    return out


def test_img2dataset_ray_distributor_writes_the_same_shards_as_multiprocessing(tmp_path, params, ray_cluster):
    import ray

    world = params.active.mini_world.model_copy(update={
        "base_url": f"http://127.0.0.1:{free_port()}", "n_images": 12, "parts": ["images"]})
    root = tmp_path / "mw"
    build_mini_world(world, root)
    cfg = params.active.curation
    dl = cfg.download.model_copy(update={"samples_per_shard": 12, "threads": 4})
    source = Source(name="mw", reader="laion", metadata=str(root / "metadata.parquet"))
    selected = select_source(cfg, source, tmp_path / "select")["selected"]
    job = ray.get_runtime_context().get_job_id()
    with serve_mini_world(root, world.base_url):
        by_process = download_source(tmp_path / "select" / "selected.parquet", tmp_path / "mp", dl)
        by_ray = download_source(tmp_path / "select" / "selected.parquet", tmp_path / "ray",
                                 dl.model_copy(update={"distributor": "ray"}), ray=ray_cluster)
    assert ray.get_runtime_context().get_job_id() == job  # the session's Ray, not one img2dataset started
    assert by_ray == by_process and by_ray["shards"] == -(-selected // 12) >= 2
    assert by_ray["status"]["success"] > 0
    assert _shard_contents(tmp_path / "ray") == _shard_contents(tmp_path / "mp")


KILLED_WRITER = """
import os, sys, time
import pyarrow as pa
from img2dataset.writer import WebDatasetSampleWriter
out = sys.argv[1]
schema = pa.schema([("key", pa.string())])
for shard, samples in ((0, 2), (1, 10**6)):  # shard 0 finished, shard 1 killed mid-way
    w = WebDatasetSampleWriter(shard, out, False, 5, schema, "jpg")
    for i in range(samples):
        w.write(os.urandom(1 << 20), f"{shard:05d}{i:04d}", None, {"key": f"{shard:05d}{i:04d}"})
        if shard == 1 and i == 8:  # 9 MB buffered: one 5 MB part of a multipart upload is sent
            print("mid-shard", flush=True)
            time.sleep(600)
    w.close()
"""


def test_a_writer_killed_mid_shard_leaves_no_visible_shard_on_the_bucket(tmp_path, bucket):
    """img2dataset's own shard writer streams a tar to the bucket (a multipart upload) and is
    killed (SIGKILL) mid-shard: the object only appears on completion, so listings, glob and the
    stages see shard 0 alone; the half shard is an upload in flight, never an object."""
    out = f"{bucket}/killed-writer/shards"  # moto keeps its buckets per process: a prefix of its own
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    endpoint = json.loads(os.environ["FSSPEC_S3"])["client_kwargs"]["endpoint_url"]
    env = {**os.environ, "FSSPEC_S3": json.dumps({"client_kwargs": {"endpoint_url": endpoint},
                                                  "default_block_size": 5 << 20})}
    proc = subprocess.Popen([sys.executable, str(script), out], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"mid-shard"
    finally:
        proc.kill()
        proc.wait()
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    in_flight = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert [u["Key"] for u in in_flight] == ["killed-writer/shards/00001.tar"]  # truly mid-shard
    fsspec.filesystem("s3").invalidate_cache()
    assert storage.glob(out, "*.tar") == [f"{out}/00000.tar"]
    assert not storage.exists(f"{out}/00001.tar")
    assert [s["__key__"] for s in storage.iter_tar_samples(f"{out}/00000.tar")] == ["000000000", "000000001"]


WORLD_CMD = ("from lumos.config import load_params; from lumos.demo import build_mini_world; "
             "build_mini_world(load_params('{params}').active.mini_world.model_copy("
             "update=dict(n_images=12, parts=['images'])), 'world')")
SELECT_CMD = ("from lumos.config import Source, load_params; from lumos.curation.select import select_source; "
              "select_source(load_params('{params}').active.curation, "
              "Source(name='mw', reader='laion', metadata='world/metadata.parquet'), 'select')")


def _run(args, cwd) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_dvc_remote_on_the_bucket_push_then_pull_into_a_fresh_clone_makes_repro_a_no_op(tmp_path, bucket):
    """The documented remote set-up (bench/README.md, docs/scale-out.md): `dvc remote add` an
    s3:// URL, `endpointurl` for an S3-compatible server, credentials from AWS_* (never in git).
    Two real lumos stages (mini-world images, curate-select) in a small project."""
    pytest.importorskip("dvc_s3", reason="DVC's s3 remote needs the dvc-s3 plugin (requirements.lock)")
    import yaml

    py, dvc = sys.executable, str(Path(sys.executable).with_name("dvc"))
    proj = tmp_path / "proj"
    proj.mkdir()
    stages = {"stages": {
        "world": {"cmd": f'{py} -c "{WORLD_CMD.format(params=ROOT / "params.yaml")}"', "outs": ["world"]},
        "select": {"cmd": f'{py} -c "{SELECT_CMD.format(params=ROOT / "params.yaml")}"',
                   "deps": ["world/metadata.parquet"], "outs": ["select"]}}}
    (proj / "dvc.yaml").write_text(yaml.safe_dump(stages))
    git = ["git", "-c", "user.name=lumos", "-c", "user.email=lumos@127.0.0.1"]
    endpoint = json.loads(os.environ["FSSPEC_S3"])["client_kwargs"]["endpoint_url"]
    _run(git + ["init", "-q"], proj)
    _run([dvc, "init", "-q"], proj)
    _run([dvc, "repro"], proj)
    _run([dvc, "remote", "add", "-d", "store", f"{bucket}/dvc"], proj)
    _run([dvc, "remote", "modify", "store", "endpointurl", endpoint], proj)
    _run(git + ["add", "-A"], proj)
    _run(git + ["commit", "-qm", "pipeline"], proj)
    _run([dvc, "push"], proj)
    pushed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=BUCKET, Prefix="dvc/")
    assert pushed["KeyCount"] > 0

    clone = tmp_path / "clone"
    _run(git + ["clone", "-q", str(proj), str(clone)], tmp_path)
    assert not (clone / "select").exists()  # outputs travel through the remote, not git
    _run([dvc, "pull"], clone)
    for out in ("world/metadata.parquet", "select/selected.parquet"):
        assert (clone / out).read_bytes() == (proj / out).read_bytes()
    assert "up to date" in _run([dvc, "status"], clone)
    repro = _run([dvc, "repro"], clone)
    assert "Running stage" not in repro and "didn't change" in repro


def test_renders_and_nvs_features_on_the_bucket_read_back_by_the_training_reader(tmp_path, params, bucket):
    """params storage.renders / storage.features on the bucket: render-objaverse and features-nvs
    write there, a rerun skips every object, and NVSStream (training) and NVSObjects (sampling)
    read the same tensors as a local run of the same stage gives."""
    import torch

    from lumos.data.nvs import NVSObjects, NVSStream
    from lumos.data.stream import ShardCache
    from lumos.demo.meshes import build_meshes
    from lumos.render.stages import run_render
    from lumos.tasks import nvs_stages

    from conftest import without_run_outputs

    recs = build_meshes(tmp_path / "meshes", n=2, seed=0)
    (tmp_path / "objects.json").write_text(json.dumps({r["uid"]: f"meshes/{r['path']}" for r in recs}))
    p = without_run_outputs(params.active)
    p = p.model_copy(update={
        "nvs": p.nvs.model_copy(update={"objects": str(tmp_path / "objects.json"), "views": 3, "resolution": 16,
                                        "eval_azimuths": 2, "renderer": "raycast"}),
        "ray": p.ray.model_copy(update={"in_process_max_shards": 100}),  # in this process: no actors
        "storage": p.storage.model_copy(update={"renders": f"{bucket}/renders", "features": f"{bucket}/features"})})
    assert run_render(p)["rendered"] == 2
    assert storage.exists(f"{bucket}/renders/views.parquet")
    uid = recs[0]["uid"]
    assert storage.exists(f"{bucket}/renders/objaverse/{uid}/_DONE")
    counts = nvs_stages.run_features(p)
    assert counts["objaverse"]["computed"] == 2 and counts["gso"]["computed"] == 2
    assert nvs_stages.run_features(p)["objaverse"] == {"computed": 0, "cached": 2, "objects": 2}  # rerun

    local = p.model_copy(update={"storage": p.storage.model_copy(update={
        "renders": str(tmp_path / "renders"), "features": str(tmp_path / "features")})})
    run_render(local)
    nvs_stages.run_features(local)
    remote_stream = NVSStream(f"{bucket}/features/nvs/objaverse")
    local_stream = NVSStream(tmp_path / "features" / "nvs" / "objaverse")
    assert remote_stream.shards[0].url.startswith(f"{bucket}/features/nvs/objaverse/")
    assert remote_stream.uids == local_stream.uids == sorted(r["uid"] for r in recs)
    got = remote_stream.load_rows(remote_stream.shards[1], [0, 5], ShardCache())
    want = local_stream.load_rows(local_stream.shards[1], [0, 5], ShardCache())
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    gso_remote, gso_local = NVSObjects(f"{bucket}/features/nvs/gso"), NVSObjects(tmp_path / "features/nvs/gso")
    assert gso_remote.uids == gso_local.uids
    assert all(torch.equal(gso_remote.tensors[k], gso_local.tensors[k]) for k in gso_local.tensors)
