"""train-i2i on 2 ranks (DeepSpeed launcher, gloo, ZeRO-2): disjoint samples, rank-0-only writes,
a stale run removed; then resume across layouts (2 -> 1 -> 2 ranks) keeping the optimizer state
through DeepSpeed's universal checkpoint, and only the last ``keep_last`` checkpoints kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import without_run_outputs_raw
from lumos.config import Launch
from lumos.data.features import write_feature_shard
from lumos.train.ema import EMA
from lumos.train.launch import run_training_stage

ROOT = Path(__file__).resolve().parents[1]
SHARDS, ROWS = 4, 4  # 16 samples: 2 ranks x 2 steps x 2 micro-batches x 2 = one epoch


def _params(root: Path, steps: int) -> Path:
    raw = without_run_outputs_raw(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["profiles"]["tiny"]["train"].update(steps=steps, checkpoint_every=2, log_every=1, global_batch=8,
                                            micro_batch=2, keep_last=2, loader_workers=1,
                                            gradient_checkpointing=False)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("multirank")
    g = torch.Generator().manual_seed(0)
    for s in range(SHARDS):
        write_feature_shard(root / f"datasets/features/i2i/s{s}.safetensors", [f"k{s}-{i}" for i in range(ROWS)],
                            {"latent_mean": torch.randn(ROWS, 4, 8, 8, generator=g),
                             "latent_std": torch.full((ROWS, 4, 8, 8), 0.1),
                             "condition": torch.randn(ROWS, 1, 32, generator=g)}, {})
    return root


def _traced(trace: Path, rank: int) -> list[int]:
    lines = (trace / f"rank-{rank}.jsonl").read_text().splitlines()
    return [s for line in lines for s in json.loads(line)["samples"]]


def _adam_steps(ckpt: Path) -> set[int]:
    """Adam's step count in every rank's ZeRO optimizer partition of a checkpoint."""
    steps = set()
    for f in sorted((ckpt / "deepspeed/state").glob("*optim_states.pt")):
        state = torch.load(f, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        steps |= {int(s["step"]) for s in state["base_optimizer_state"]["state"].values()}
    return steps


def test_two_ranks_then_resume_on_one_and_back_on_two(project, tmp_path, monkeypatch):
    models = project / "models/i2i"
    stale = models / "checkpoints/step-0000010"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text(json.dumps({"task": "another run"}))
    (stale / "DONE").write_text("10")

    trace = tmp_path / "trace"
    trace.mkdir()
    two = Launch(mode="deepspeed", num_gpus=2, env={"LUMOS_SAMPLE_TRACE": str(trace)})
    first = run_training_stage("train-i2i", two, _params(project, 2), result_file="models/i2i/summary.json",
                               cwd=project)
    assert first["steps"] == 2 and not stale.exists()  # rank 0 removed the stale run, then both started at 0
    r0, r1 = _traced(trace, 0), _traced(trace, 1)
    assert len(r0) == len(r1) == 8 and set(r0).isdisjoint(r1)  # each rank its own shards
    assert len(set(r0 + r1)) == SHARDS * ROWS

    ckpt = models / "checkpoints/step-0000002"
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["deepspeed"] == {"zero_stage": 2, "world_size": 2}
    assert cfg["loader"] == {"micro_batches": 4, "workers": 1, "world_size": 2}
    written = {p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file()}
    ours = {w for w in written if not w.startswith(("dvclive/", "checkpoints/step-0000002/deepspeed/"))}
    assert ours == {"summary.json", *(f"checkpoints/step-0000002/{n}" for n in
                                      ("model.safetensors", "ema.safetensors", "config.json", "losses.json", "DONE"))}
    assert {p.name for p in (ckpt / "deepspeed/state").iterdir()} == {
        "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt"}  # each rank its optimizer partition
    logged = (models / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in logged[1:]] == ["1", "2"]  # one logger: rank 0
    assert _adam_steps(ckpt) == {2}

    # 2 -> 1 rank: the ZeRO partitions are re-cut from a universal checkpoint, optimizer included.
    monkeypatch.chdir(project)
    with pytest.warns(UserWarning, match="universal checkpoint"):
        one = run_training_stage("train-i2i", Launch(mode="inprocess"), _params(project, 4))
    assert one["steps"] == 4 and (ckpt / "deepspeed/universal/zero").is_dir()
    assert _adam_steps(models / "checkpoints/step-0000004") == {4}  # 2 steps more, not afresh
    losses = json.loads((models / "checkpoints/step-0000004/losses.json").read_text())
    assert losses[:2] == json.loads((ckpt / "losses.json").read_text())

    # 1 -> 2 ranks, and keep_last: 2 prunes the oldest checkpoint.
    back = run_training_stage("train-i2i", Launch(mode="deepspeed", num_gpus=2), _params(project, 6),
                              result_file="models/i2i/summary.json", cwd=project)
    assert back["steps"] == 6
    last = models / "checkpoints/step-0000006"
    assert json.loads((last / "config.json").read_text())["deepspeed"]["world_size"] == 2
    assert _adam_steps(last) == {6}
    assert sorted(p.name for p in (models / "checkpoints").iterdir()) == ["step-0000004", "step-0000006"]


def test_ema_moves_beside_the_parameters():
    ema = EMA(torch.nn.Linear(2, 2), 0.9)
    ema.to("meta")
    assert {v.device.type for v in ema.state_dict().values()} == {"meta"}
