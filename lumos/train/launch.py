"""Start a training stage in-process or through DeepSpeed's launcher, with its logs streamed.

A training stage is a ``lumos`` CLI command (``train-i2i``, ``train-t2i``, ...). With
``launch.mode: deepspeed`` (params.yaml) it runs as

    deepspeed [--hostfile F] [--num_nodes N] [--num_gpus G] [--include S | --exclude S]
              [--master_addr A] [--master_port P] [--launcher L [--launcher_args "..."]]
              --no_local_rank --module lumos.cli train-i2i --params params.yaml

in a subprocess whose output goes, line by line as it arrives, to the Prefect run logger (in a
flow) or to stdout; a non-zero exit raises :class:`LaunchError` with the exit code and the last
lines, so the flow run fails. If the flow run is cancelled (Prefect raises in the flow on SIGTERM)
the launcher's whole process group is stopped. ``inprocess`` runs the same command's function in
this process.

A flow calls::

    from lumos.train.launch import run_training_stage
    summary = run_training_stage("train-i2i", profile.launch, params,
                                 result_file=Path("models/i2i/summary.json"))

which returns the stage's result either way (read from ``result_file``, which rank 0 writes, when
launched). ``--no_local_rank``: ranks read ``LOCAL_RANK`` from the environment (the CLI takes no
``--local_rank``). Multi-node (a hostfile) needs the same project path on every node and
passwordless ssh for pdsh; see docs/scale-out.md.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lumos.config import DEFAULT_PARAMS, Launch, load_params

TAIL_LINES = 40  # lines of output a LaunchError quotes
DEEPSPEED_ENV_FILE = ".deepspeed_env"  # what DeepSpeed's runner reads from ~ and . (multi-node)


class LaunchError(RuntimeError):
    """A launched stage that exited non-zero: names the command, the exit code, the last lines."""

    def __init__(self, stage: str, argv: Sequence[str], returncode: int, tail: Sequence[str]) -> None:
        self.stage, self.argv, self.returncode, self.tail = stage, list(argv), returncode, list(tail)
        shown = "\n".join(f"  | {line}" for line in self.tail) or "  | (no output)"
        super().__init__(f"{stage} failed with exit code {returncode}: {shlex.join(self.argv)}\n"
                         f"last {len(self.tail)} line(s) of its output:\n{shown}")


@dataclass(frozen=True)
class LaunchResult:
    argv: list[str]
    returncode: int
    seconds: float
    tail: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- pure command building
def deepspeed_args(launch: Launch, master_port: int | None = None) -> list[str]:
    """The launcher's own options from the ``launch`` section (``master_port`` when it has none)."""
    args: list[str] = []
    if launch.hostfile is not None:
        args += ["--hostfile", launch.hostfile]
    if launch.num_nodes is not None:
        args += ["--num_nodes", str(launch.num_nodes)]
    if launch.num_gpus is not None:
        args += ["--num_gpus", str(launch.num_gpus)]
    if launch.include:
        args += ["--include", launch.include]
    if launch.exclude:
        args += ["--exclude", launch.exclude]
    if launch.master_addr:
        args += ["--master_addr", launch.master_addr]
    port = launch.master_port if launch.master_port is not None else master_port
    if port is not None:
        args += ["--master_port", str(port)]
    if launch.hostfile is not None:  # the multi-node backend matters only with other hosts
        args += ["--launcher", launch.launcher]
        if launch.launcher_args:
            args += ["--launcher_args", launch.launcher_args]
    return args


def stage_args(command: str, params: str | Path | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``lumos.cli`` as a module with one stage command (what every rank runs)."""
    args = ["--no_local_rank", "--module", "lumos.cli", command]
    if params is not None:
        args += ["--params", str(params)]
    return args + list(extra)


def deepspeed_command(command: str, launch: Launch, params: str | Path | None = None, *,
                      master_port: int | None = None, extra: Sequence[str] = (),
                      executable: Sequence[str] = ("deepspeed",)) -> list[str]:
    """The whole argv: ``deepspeed <launcher options> --no_local_rank --module lumos.cli <command>``."""
    return [*executable, *deepspeed_args(launch, master_port), *stage_args(command, params, extra)]


def forwarded_env(launch: Launch) -> dict[str, str]:
    """What every rank's environment gets on top of the caller's (and what other nodes are sent):
    the loopback settings, unbuffered output, and ``launch.env`` (which wins)."""
    from lumos.env import LOOPBACK_ENV

    env = {k: os.environ.get(k, v) for k, v in LOOPBACK_ENV.items()}
    env["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are printed
    env.setdefault("TQDM_MININTERVAL", os.environ.get("TQDM_MININTERVAL", "2"))  # fewer bar lines in logs
    env.update(launch.env)
    return env


def env_file_text(env: Mapping[str, str], existing: Sequence[str] = ()) -> str:
    """A DeepSpeed env file (KEY=VALUE lines, exported to every node by the multi-node runner):
    the user's own ``.deepspeed_env`` lines first, then ``env``."""
    lines = [line.rstrip("\n") for line in existing if line.strip() and "=" in line]
    lines += [f"{k}={v}" for k, v in env.items()]
    return "".join(f"{line}\n" for line in lines)


# --------------------------------------------------------------------------- running
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deepspeed_executable() -> list[str]:
    """The venv's ``deepspeed`` script beside this Python, else its module (same code)."""
    script = Path(sys.executable).parent / "deepspeed"
    return [str(script)] if script.is_file() else [sys.executable, "-u", "-m", "deepspeed.launcher.runner"]


def line_logger() -> Callable[[str], None]:
    """Where streamed lines go: the Prefect run logger inside a flow or task run, else stdout."""
    try:
        from prefect import get_run_logger
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:
        pass
    else:
        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            return get_run_logger().info
    return lambda line: print(line, flush=True)


def run_streaming(argv: Sequence[str], *, stage: str = "", env: Mapping[str, str] | None = None,
                  cwd: str | Path | None = None, log: Callable[[str], None] | None = None,
                  tail_lines: int = TAIL_LINES) -> LaunchResult:
    """Run ``argv``, handing each output line (stdout and stderr, ``\\r`` progress updates too) to
    ``log`` as it arrives; raise :class:`LaunchError` on a non-zero exit. If this process is
    interrupted (a cancelled flow run), the launcher's process group is terminated first."""
    log = log or line_logger()
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, env=dict(env) if env is not None else None,
                            cwd=cwd, start_new_session=True)  # its own group: stoppable as a whole
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:  # universal newlines: tqdm's "\r" updates come as lines too
            line = raw.rstrip()
            if line:
                tail.append(line)
                log(line)
        returncode = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if returncode != 0:
        raise LaunchError(stage or Path(argv[0]).name, argv, returncode, tail)
    return LaunchResult(list(argv), returncode, time.monotonic() - start, list(tail))


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the launcher's process group (DeepSpeed's launch kills its ranks on it), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def launch_stage(command: str, launch: Launch, params: str | Path | None = DEFAULT_PARAMS, *,
                 extra: Sequence[str] = (), cwd: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> LaunchResult:
    """Run one ``lumos`` stage command through the ``deepspeed`` launcher (whatever ``launch.mode``)."""
    port = None if launch.master_port is not None or launch.hostfile is not None else _free_port()
    argv = deepspeed_command(command, launch, params, master_port=port, extra=extra,
                             executable=_deepspeed_executable())
    ranks_env = forwarded_env(launch)
    env = {**os.environ, **ranks_env}
    if "DS_ACCELERATOR" not in env:  # spare the local launcher its accelerator probe (not
        import torch                 # exported: each node's engine picks its own, lumos.train.engine)

        env["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
    log = log or line_logger()
    log(f"{command}: {shlex.join(argv)}")
    env_file = None
    try:
        if launch.hostfile is not None:
            # Other nodes get only what the runner exports: the PYTHON*/NCCL* variables and the
            # lines of DS_ENV_FILE, here the user's .deepspeed_env files plus ours.
            root = Path(cwd or ".")
            existing = [line for base in (Path.home(), root) if (base / DEEPSPEED_ENV_FILE).is_file()
                        for line in (base / DEEPSPEED_ENV_FILE).read_text().splitlines()]
            fd, env_file = tempfile.mkstemp(prefix="lumos-ds-env-", suffix=".env")
            with os.fdopen(fd, "w") as f:
                f.write(env_file_text(ranks_env, existing))
            env["DS_ENV_FILE"] = env_file
        return run_streaming(argv, stage=command, env=env, cwd=cwd, log=log)
    finally:
        if env_file is not None:
            os.unlink(env_file)


def stage_function(command: str) -> Callable:
    """The ``module:function`` a ``lumos`` stage command runs on the active profile."""
    from lumos.cli import COMMANDS

    target = getattr(COMMANDS[command].run, "target", None)
    if target is None:
        raise KeyError(f"lumos command {command!r} is not a profile stage (module:function)")
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def run_training_stage(command: str, launch: Launch, params: str | Path = DEFAULT_PARAMS, *,
                       result_file: str | Path | None = None, cwd: str | Path | None = None,
                       log: Callable[[str], None] | None = None) -> dict:
    """Run the ``lumos`` stage ``command`` as ``launch.mode`` says and return its result.

    ``inprocess``: the command's function on the active profile, in this process (and directory).
    ``deepspeed``: :func:`launch_stage`, then the JSON the stage wrote to ``result_file`` (which
    must be newer than the launch; relative to ``cwd``); without one, the launch's record.
    Raises :class:`LaunchError` when the launched command fails.
    """
    stage = stage_function(command)  # an unknown command fails here, before anything starts
    if launch.mode == "inprocess":
        return stage(load_params(params).active)
    started = time.time()
    done = launch_stage(command, launch, params, cwd=cwd, log=log)
    record = {"command": shlex.join(done.argv), "seconds": round(done.seconds, 2)}
    if result_file is None:
        return {"launch": record}
    path = Path(cwd or ".") / result_file
    if not path.is_file() or path.stat().st_mtime < started - 1:
        raise LaunchError(command, done.argv, 0, [*done.tail, f"(exit 0, but {path} was not written)"])
    return json.loads(path.read_text())
