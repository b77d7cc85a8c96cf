"""`dvc repro` on a copy of the project: the first run builds, the second executes nothing."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import copy_project, free_port

pytestmark = pytest.mark.timeout(1800)  # the first test runs the whole tiny pipeline


def _run(args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


# The tiny profile trains long enough to learn visibly (issue 15: tests/test_learning.py and the
# report measure that). This module checks the pipeline's wiring, so it runs the same stages and
# code paths with the tiny profile's training schedules cut back (to the lengths they had before
# issue 15; the VAE to 60 steps): a params perturbation of step counts only (dotted keys under
# profiles.tiny; `[*]`: every item of a list).
SHORT_SCHEDULES = {"vae_train.steps": 60, "train.steps": 40, "train.checkpoint_every": 20,
                   "t2i.stages[*].steps": 10, "t2i.checkpoint_every": 10, "nvs.train.steps": 16, "nvs.train.checkpoint_every": 8,
                   "i2v.train.steps": 10, "i2v.train.checkpoint_every": 5, "i2v.sample_clips": 2,
                   # the suite's time budget: the train stages in the stage's own process (the
                   # DeepSpeed launcher path is tests/test_launch.py's and test_multirank.py's), and
                   # the per-shard stages of a few shards without actor start-up (their Ray path is
                   # tests/test_ray_t2i_stages.py's; score and features-i2i still run on Ray here)
                   "launch.mode": "inprocess", "ray.in_process_max_shards": 64}


def shorten_training(params_file: Path) -> None:
    params = yaml.safe_load(params_file.read_text())
    for dotted, value in SHORT_SCHEDULES.items():
        *path, last = dotted.split(".")
        nodes = [params["profiles"]["tiny"]]
        for key in path:
            nodes = [x for n in nodes for x in (n[key[:-3]] if key.endswith("[*]") else [n[key]])]
        for node in nodes:
            node[last] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the project whose stages report to one local Prefect server and start from the
    warm stage server, as `bash run.sh` runs them (`lumos server start`, on a free port), with
    the training schedules shortened (``SHORT_SCHEDULES``)."""
    root, env = copy_project(tmp_path_factory.mktemp("clone"))
    shorten_training(root / "params.yaml")
    env.update(LUMOS_PREFECT_PORT=str(free_port()), LUMOS_PREFECT_STATE=str(tmp_path_factory.mktemp("state")))
    for key in ("PREFECT_API_URL", "RAY_ADDRESS", "LUMOS_STAGE_SERVER"):
        env.pop(key, None)
    try:
        _run(["lumos", "server", "start"], root, env)
        exports = _run(["lumos", "server", "env"], root, env)
        env.update(line.removeprefix("export ").split("=", 1) for line in exports.splitlines()
                   if line.startswith("export "))
        assert env["LUMOS_STAGE_SERVER"] and env["PREFECT_API_URL"]
        yield root, env
    finally:
        subprocess.run(["lumos", "server", "stop"], cwd=root, env=env, capture_output=True)


def _post(url: str, body: dict) -> list[dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


STAGES = ["mini-world", "train-vae", "curate-select", "curate-download", "curate-score", "curate-keep",
          "curate-catalog", "features-i2i", "train-i2i", "sample-i2i", "t2i-subset", "caption",
          "features-t5", "prepare-webvid", "render-objaverse",
          "features-t2i", "train-t2i", "sample-t2i", "features-nvs", "train-nvs", "sample-nvs",
          "features-i2v", "train-i2v", "sample-i2v",
          "evaluate-i2i", "evaluate-t2i", "evaluate-nvs", "evaluate-i2v", "report"]


def _ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def test_second_repro_runs_nothing(project):
    root, env = project
    first = _run(["dvc", "repro"], root, env)
    assert sorted(_ran(first)) == sorted(STAGES)
    manifest = root / "datasets/mini-world/manifest.json"
    assert manifest.is_file()
    stamp = manifest.stat().st_mtime_ns

    # Issue 15: every stage that ran shows in the Prefect UI as its own completed flow run
    api = env["PREFECT_API_URL"]
    flows = {f["id"]: f["name"] for f in _post(f"{api}/flows/filter", {})}
    runs = _post(f"{api}/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"is_null_": True}},
                                              "limit": 200})
    completed = {flows[r["flow_id"]] for r in runs if r["state_type"] == "COMPLETED"}
    assert set(STAGES) <= completed, sorted(set(STAGES) - completed)

    second = _run(["dvc", "repro"], root, env)
    assert "Running stage" not in second
    assert "Stage 'mini-world' didn't change, skipping" in second
    assert manifest.stat().st_mtime_ns == stamp

    status = _run(["dvc", "status"], root, env)
    assert "Data and pipelines are up to date" in status
    out = _run(["lumos", "catalog", "SELECT count(*) AS kept FROM images"], root, env)
    assert int(out.split("│")[-2]) > 50
    summary = json.loads((root / "models/i2i/summary.json").read_text())
    assert summary["steps"] == 40 and summary["loss_last"] < summary["loss_first"]
    for png in ("variations.png", "interpolation.png"):
        assert (root / "samples/i2i" / png).stat().st_size > 1000
    out = _run(["lumos", "catalog", "SELECT count(long_caption) FROM images_captioned"], root, env)
    assert int(out.split("│")[-2]) > 20  # the T2I subset was captioned
    out = _run(["lumos", "catalog", "SELECT count(*) FROM clips WHERE frames = 16"], root, env)
    assert int(out.split("│")[-2]) == 19  # 24 mini-world clips, 5 bad on purpose
    out = _run(["lumos", "catalog", "SELECT min(views) FROM objects"], root, env)
    assert int(out.split("│")[-2]) == 32
    out = _run(["lumos", "catalog", "SELECT count(*) FROM object_rejects"], root, env)
    assert int(out.split("│")[-2]) == 3  # missing, corrupt, not a GLB


def test_transfer_tasks_fine_tune_from_the_prior_and_write_samples(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    t2i = json.loads((root / "models/t2i/summary.json").read_text())
    assert t2i["prior"] == "i2i" and len(t2i["stages"]) == 4
    # the condition projection (y_proj: 2 weights, 2 biases) + null token, re-initialised for T5,
    # and the lumos backbone's fixed sin-cos position table of the T2I latent size (the child's own)
    assert t2i["stages"][0]["transfer"]["initialised"] == 6
    # each stage resumes the last: every tensor of the stage before is carried over, none widened
    # (what a later stage initialises is its own position table and, multi-aspect, size embedding)
    carried = [s["transfer"]["copied"] for s in t2i["stages"]]
    assert all(b >= a for a, b in zip(carried, carried[1:]))
    assert all(s["transfer"]["widened"] == 0 for s in t2i["stages"])
    grids = sorted(p.name for p in (root / "samples/t2i").glob("grid-*.png"))
    assert grids == ["grid-48x80.png", "grid-64x64.png"]  # two aspect ratios (t2i.sample)
    assert len(list((root / "samples/nvs").glob("strip-*.png"))) == 2
    clips = root / "samples/i2v"
    assert len(list(clips.glob("*.mp4"))) == 2 and len(list(clips.glob("*.gif"))) == 2
    for task in ("nvs", "i2v"):
        ckpt = sorted((root / f"models/{task}/checkpoints").glob("step-*"))[-1]
        lineage = json.loads((ckpt / "config.json").read_text())["lineage"]
        parent = lineage["parent"]
        assert lineage["prior"] == "i2i" and parent["task"] == "i2i" and parent["step"] == 40
        assert all(v["dvc_md5"] for v in lineage["datasets"].values())  # versions from dvc.lock


def test_metrics_plots_and_report(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    nvs_run = json.loads((root / "metrics/nvs.json").read_text())
    nvs = nvs_run["gso"]  # held-out GSO-layout objects, rendered at the GSO cameras
    assert set(nvs) >= {"elevation_0", "elevation_30"} and nvs_run["prior"] == "i2i"
    assert nvs["elevation_0"]["views"] == 2 * 15 and nvs["elevation_30"]["views"] == 2 * 16
    assert nvs["samples"] == 2 and nvs["stand_in"] and "heldout/gso" in nvs["reference"]
    t2i = json.loads((root / "metrics/t2i.json").read_text())["coco30k"]  # held-out COCO-layout stand-in
    assert {"fid", "kid", "clip_score", "alignment"} <= set(t2i)
    assert t2i["samples"] == 12 and t2i["stand_in"] and "heldout/coco" in t2i["reference"]
    assert set(t2i["alignment"]) == {"count", "colour", "position", "shape", "overall"}
    long = json.loads((root / "metrics/t2i.json").read_text())["coco30k_long"]  # Table 2 with long captions
    assert long["samples"] == 12 and long["reference"] == t2i["reference"] and "fid" in long
    for task, name in (("i2i", "imagenet"), ("t2i", "coco")):  # eval.every: held-out loss per checkpoint
        curve = root / f"models/{task}/dvclive/plots/metrics/eval/heldout_loss_{name}.tsv"
        assert len(curve.read_text().splitlines()) >= 3, curve  # header + one row per saved checkpoint
    i2i = json.loads((root / "metrics/i2i.json").read_text())["imagenet"]  # held-out ImageNet-val stand-in
    assert i2i["samples"] == 12 and i2i["stand_in"] and "heldout/imagenet" in i2i["reference"]
    assert set(i2i["colour_histogram"]) == {"to_input", "to_other", "ratio"}  # issue 15's learning measure
    i2v = json.loads((root / "metrics/i2v.json").read_text())
    for name in ("ucf101", "msrvtt"):  # held-out clips' first frames -> clips (Table 5)
        assert {"fvd", "kvd", "pic"} <= set(i2v[name]) and i2v[name]["samples"] == 2
        assert i2v[name]["stand_in"] and f"heldout/{name}" in i2v[name]["reference"]
    assert "webvid" not in i2v
    shown = json.loads(subprocess.run(["dvc", "metrics", "show", "--json"], cwd=root, env=env,
                                      capture_output=True, text=True, check=True).stdout)
    files = {f for run in shown.values() for f in run.get("data", {})}
    assert {"metrics/i2i.json", "metrics/t2i.json", "metrics/nvs.json", "metrics/i2v.json"} <= files
    _run(["dvc", "plots", "show", "-o", "plots-html"], root, env)
    html = (root / "plots-html/index.html").read_text()
    assert "models/nvs/dvclive/plots/metrics" in html and "models/t2i/dvclive/plots/metrics" in html
    assert "heldout_loss_imagenet" in html and "heldout_loss_coco" in html
    report = (root / "reports/report.html").read_text()
    assert "data:image/png;base64" in report and "elevation" in report.lower()
    assert "MS-COCO FID-30K (Table 2) [mini-world stand-in]" in report


def test_queued_ablation_grid_runs_and_compares(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(git + ["add", "-A"], root, env)
    _run(git + ["commit", "-qm", "baseline"], root, env)
    _run(["lumos", "ablate", "cfg"], root, env)  # 4 CFG scales, each re-evaluating the I2I prior
    _run(["dvc", "exp", "run", "--run-all"], root, env)
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=root, env=env, capture_output=True,
                           text=True, check=True).stdout
    table = json.loads(shown)
    exps = [e for base in table for e in (base.get("experiments") or [])]
    runs = {}
    for e in exps:
        rev = e["revs"][0]
        data = rev["data"]
        cfg = data["params"]["params.yaml"]["data"]["profiles"]["tiny"]["diffusion"]["cfg_scale"]
        runs[cfg] = data["metrics"]["metrics/i2i.json"]["data"]["imagenet"]["fid"]
    assert sorted(runs) == [1.0, 2.0, 4.5, 7.0]
    assert len(set(runs.values())) == 4  # the guidance scale changed every run's samples


def test_keep_threshold_change_invalidates_keep_but_not_download_or_scores(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["profiles"]["tiny"]["curation"]["keep"]["aesthetic_min"] = 6.0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(_run(["dvc", "status", "--json"], root, env))
    assert set(status) == {"curate-keep"}  # downstream stages rerun only if keep's output changes
    assert "profiles.tiny.curation.keep" in json.dumps(status["curate-keep"])
    ran = _run(["dvc", "repro", "curate-keep", "--single-item"], root, env)
    assert _ran(ran) == ["curate-keep"]
    (root / "params.yaml").write_text(original)


def test_only_the_active_profile_is_tracked(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["profiles"]["paper"]["mini_world"]["seed"] = 7  # the inactive profile
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], root, env)
    params["profiles"]["tiny"]["mini_world"]["seed"] = 7  # the active one
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "profiles.tiny.mini_world" in _run(["dvc", "status"], root, env)
    (root / "params.yaml").write_text(original)
