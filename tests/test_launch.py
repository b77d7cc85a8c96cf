"""Training launched through DeepSpeed's launcher: the command from params, streamed logs, a failed
launch failing the Prefect flow run, and a real tiny train-i2i run that writes its checkpoints."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import prefect.main  # noqa: F401  (Prefect sets up its logging now, not inside a capsys test)
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import ROOT, without_run_outputs_raw
from lumos.config import Launch, VAE, VisionEncoder, parse_params
from lumos.train.launch import (LaunchError, deepspeed_command, env_file_text, line_logger,
                                run_streaming, run_training_stage)


# --------------------------------------------------------------------------- command building
def test_local_command_is_one_process_on_this_machine():
    launch = Launch(mode="deepspeed", num_gpus=1)
    assert deepspeed_command("train-i2i", launch, "params.yaml", master_port=29123) == [
        "deepspeed", "--num_gpus", "1", "--master_port", "29123",
        "--no_local_rank", "--module", "lumos.cli", "train-i2i", "--params", "params.yaml"]
    # No hostfile: no multi-node backend option; no port anywhere: DeepSpeed's default.
    assert deepspeed_command("train-t2i", Launch(mode="deepspeed")) == [
        "deepspeed", "--no_local_rank", "--module", "lumos.cli", "train-t2i"]


def test_multi_node_command_from_the_paper_profile(params):
    launch = params.profiles["paper"].launch
    cmd = deepspeed_command("train-i2i", launch, "params.yaml", master_port=1)  # params' port wins
    assert cmd[:13] == ["deepspeed", "--hostfile", "configs/hostfile", "--num_nodes", "8",
                        "--num_gpus", "8", "--master_port", "29500", "--launcher", "pdsh",
                        "--no_local_rank", "--module"]
    assert cmd[13:] == ["lumos.cli", "train-i2i", "--params", "params.yaml"]


def test_every_option_and_what_deepspeed_makes_of_it(tmp_path):
    from deepspeed.launcher.runner import apply_num_nodes_and_gpus, fetch_hostfile, parse_args

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("".join(f"node-{i} slots=8\n" for i in range(10)))
    launch = Launch(mode="deepspeed", hostfile=str(hostfile), num_nodes=8, num_gpus=8,
                    master_addr="10.0.0.1", master_port=29600, launcher="openmpi",
                    launcher_args="--mca btl ^openib")
    cmd = deepspeed_command("train-nvs", launch, "p.yaml", extra=["--foo"], executable=["ds"])
    args = parse_args(cmd[1:])  # the real launcher's parser
    assert (args.hostfile, args.num_nodes, args.num_gpus) == (str(hostfile), 8, 8)
    assert (args.master_addr, args.master_port, args.launcher) == ("10.0.0.1", 29600, "openmpi")
    assert args.launcher_args == "--mca btl ^openib"
    assert args.module and args.no_local_rank and args.user_script == "lumos.cli"
    assert args.user_args == ["train-nvs", "--params", "p.yaml", "--foo"]
    ranks = apply_num_nodes_and_gpus(fetch_hostfile(args.hostfile), args.num_nodes, args.num_gpus)
    assert list(ranks) == [f"node-{i}" for i in range(8)]  # the first 8 hosts ...
    assert sum(len(v) for v in ranks.values()) == 64  # ... x 8 GPUs: the paper's 64 A100s
    inc = Launch(mode="deepspeed", hostfile="h", include="node-0@node-1:0,2")
    assert deepspeed_command("train-i2i", inc)[1:5] == ["--hostfile", "h", "--include", "node-0@node-1:0,2"]
    exc = Launch(mode="deepspeed", hostfile="h", exclude="node-1:0")
    assert deepspeed_command("train-i2i", exc)[3:5] == ["--exclude", "node-1:0"]


@pytest.mark.parametrize("values, words", [
    ({"include": "a", "exclude": "b"}, "mutually exclusive"),
    ({"include": "a", "num_gpus": 2}, "cannot be combined"),
    ({"num_nodes": 2}, "no hostfile"),
    ({"mode": "torchrun"}, "launch.mode"),
    ({"launcher": "ssh"}, "launch.launcher"),
    ({"master_port": 70000}, "launch.master_port"),
])
def test_bad_launch_settings_fail_naming_the_key(values, words):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profiles"]["tiny"]["launch"].update(values)
    with pytest.raises(ValueError, match=words):
        parse_params(raw, "params.yaml")


def test_env_file_keeps_the_users_lines_then_ours():
    text = env_file_text({"A": "1", "NCCL_DEBUG": "WARN"}, ["# comment\n", "HF_HOME=/data/hf\n", "\n"])
    assert text == "HF_HOME=/data/hf\nA=1\nNCCL_DEBUG=WARN\n"


# --------------------------------------------------------------------------- streaming
def test_lines_are_streamed_as_they_arrive_and_failure_quotes_the_tail():
    seen: list[tuple[float, str]] = []
    script = ("import sys, time\nprint('first', flush=True)\ntime.sleep(1.5)\n"
              "sys.stderr.write('progress 1\\rprogress 2\\n')\n"
              "for i in range(60): print('line', i)\nsys.exit(3)\n")
    start = time.monotonic()
    with pytest.raises(LaunchError) as err:
        run_streaming([sys.executable, "-c", script], stage="demo",
                      log=lambda line: seen.append((time.monotonic() - start, line)))
    assert seen[0][1] == "first" and seen[0][0] < 1.2  # before the process went on sleeping
    assert [line for _, line in seen[1:3]] == ["progress 1", "progress 2"]  # "\r" splits bars
    e = err.value
    assert e.returncode == 3 and e.tail[-1] == "line 59" and len(e.tail) == 40
    assert "demo failed with exit code 3" in str(e) and "| line 59" in str(e)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except FileNotFoundError:
        return True
    return state in "ZX"  # exited, not yet reaped


def test_an_interrupted_stream_stops_the_launch_and_its_children():
    """A cancelled flow run (Prefect turns SIGTERM into an exception) takes the whole launch down."""
    script = ("import subprocess, time\nchild = subprocess.Popen(['sleep', '60'])\n"
              "print(child.pid, flush=True)\ntime.sleep(60)\n")
    pids = []

    def cancel(line: str) -> None:
        pids.append(int(line))
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_streaming([sys.executable, "-c", script], log=cancel)
    deadline = time.monotonic() + 5
    while not _gone(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pids[0]) and time.monotonic() - start < 10


def test_outside_a_flow_lines_go_to_stdout(capsys):
    line_logger()("hello from a rank")
    assert capsys.readouterr().out == "hello from a rank\n"


# --------------------------------------------------------------------------- real launches
STEPS = 4


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project folder: cached I2I features and a params file of a 4-step run."""
    from PIL import Image

    from lumos.data.extract import encode_images
    from lumos.data.features import write_feature_shard
    from lumos.encoders import build_vae, build_vision_encoder

    root = tmp_path_factory.mktemp("launch")
    g = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(80, 96, 3, generator=g) * 255).byte().numpy()) for _ in range(4)]
    encoder = build_vision_encoder(VisionEncoder(name="dino", pretrained=None, tokens="cls", topk=8,
                                                 resolution=64))
    tensors = encode_images(images, 64, build_vae(VAE(pretrained=None)), encoder, batch_size=2, device="cpu")
    write_feature_shard(root / "datasets/features/i2i/a.safetensors", [f"k{i}" for i in range(4)], tensors, {})
    raw = without_run_outputs_raw(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["profiles"]["tiny"]["train"].update(steps=STEPS, checkpoint_every=2, log_every=2, global_batch=4,
                                            micro_batch=2)
    assert raw["profiles"]["tiny"]["launch"]["mode"] == "deepspeed"
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def temporary_server():
    """Flows here use Prefect's temporary server (started by the first one); stop it while pytest
    still captures its goodbye line."""
    yield
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().stop()


@pytest.fixture
def train_flow(monkeypatch, temporary_server):
    """flows/i2i.py's train-i2i flow (what `dvc repro train-i2i` runs), imported from the checkout."""
    monkeypatch.syspath_prepend(str(ROOT))
    from flows.i2i import train_flow

    return train_flow


def test_failed_launch_fails_the_flow_run_with_exit_code_and_last_lines(project, train_flow, tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)  # no features here: every rank stops with FileNotFoundError
    state = train_flow(params=str(project / "params.yaml"), return_state=True)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, LaunchError) and err.returncode == 1
    assert "train-i2i failed with exit code 1" in state.message
    assert "no feature shards in datasets/features/i2i" in state.message  # a last line, quoted
    assert any("deepspeed.launcher.launch" in line or "exits with return code" in line for line in err.tail)


def test_launched_training_writes_the_same_checkpoints_as_in_process(project, train_flow, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(project)
    summary = train_flow(params=str(project / "params.yaml"))  # the DVC stage's code path, launched
    launched = project / "models/i2i/checkpoints" / f"step-{STEPS:07d}"
    assert summary["steps"] == STEPS and (launched / "DONE").is_file()
    assert (project / "models/i2i/checkpoints/step-0000002/DONE").is_file()

    (tmp_path / "datasets").symlink_to(project / "datasets")  # same features, run in this process
    monkeypatch.chdir(tmp_path)
    inproc = run_training_stage("train-i2i", Launch(mode="inprocess"), project / "params.yaml")
    here = tmp_path / "models/i2i/checkpoints" / f"step-{STEPS:07d}"
    assert inproc["loss_last"] == pytest.approx(summary["loss_last"], rel=1e-5)
    for name in ("model", "ema"):
        a, b = load_file(str(launched / f"{name}.safetensors")), load_file(str(here / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
