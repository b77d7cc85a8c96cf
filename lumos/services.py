"""The run's local services, started once and kept for the UI: a Prefect server (SQLite,
127.0.0.1 only), the process that serves Lumos's deployments (`flows/serve.py`), a local Ray
head for the data plane, and the warm stage server (`lumos/stage_server.py`) that starts each
`dvc repro` stage by a fork instead of a fresh Python with seconds of imports.

    lumos server start | stop | status | env

`bash run.sh` calls `start` when `PREFECT_API_URL` is not set, so every stage of `dvc repro`
reports to one server (each stage's flow run shows in the UI, with its artifacts) and every
per-shard stage joins one Ray instead of starting its own. Everything is a child of its own
session (``setsid``), recorded in ``<state>/services.json``; `stop` ends those sessions.
No Prefect or Ray import here: this only starts and watches processes.

    LUMOS_PREFECT_PORT   the server's port (default 4200)
    LUMOS_PREFECT_STATE  folder of the database, logs and services.json (default .prefect-local)
    LUMOS_NO_RAY=1       do not start a local Ray head (e.g. `ray.address` names a cluster)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lumos.io import atomic_write_text

STARTUP_S = 180
LAST_SERVED = "lumos-pipeline/lumos-pipeline"  # flows/serve.py registers this one last  # the Prefect server needs 10-30 s on 2 cores, more when busy (DESIGN 6)


@dataclass
class Services:
    api_url: str
    ray_address: str | None = None
    stage_server: str | None = None  # the warm stage processes' socket (lumos/stage_server.py)
    pids: dict[str, int] = field(default_factory=dict)


def state_dir(root: Path | str = ".") -> Path:
    return (Path(root) / os.environ.get("LUMOS_PREFECT_STATE", ".prefect-local")).resolve()


def _state_file(root: Path | str) -> Path:
    return state_dir(root) / "services.json"


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def _served(api_url: str, deployment: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/deployments/name/{deployment}", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(root: Path | str = ".") -> Services | None:
    """The recorded services, or None when none were started or the server is gone."""
    file = _state_file(root)
    if not file.is_file():
        return None
    services = Services(**json.loads(file.read_text()))
    return services if healthy(services.api_url) else None


def _spawn(cmd: list[str], log: Path, env: dict, cwd: Path) -> int:
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True).pid


def _wait(what: str, ready, limit_s: float, log: Path, pid: int) -> None:
    deadline = time.monotonic() + limit_s
    while not ready():
        if not _alive(pid):
            raise RuntimeError(f"{what} exited; last lines of {log}:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up in {limit_s:.0f} s; see {log}")
        time.sleep(0.5)


def prefect_env(api_url: str, root: Path | str = ".") -> dict[str, str]:
    home = state_dir(root) / "home"
    return {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(home)}


def start(root: Path | str = ".", ray: bool | None = None, serve: bool = True,
          stages: bool = True) -> Services:
    """Start what is not running yet (idempotent); returns the services."""
    root = Path(root).resolve()
    state = state_dir(root)
    (state / "home").mkdir(parents=True, exist_ok=True)
    running = read(root)
    if running is not None:
        return running
    stop(root)  # a stale record: whatever is left of it goes first
    port = int(os.environ.get("LUMOS_PREFECT_PORT", "4200"))
    api_url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, **prefect_env(api_url, root), PREFECT_SERVER_API_HOST="127.0.0.1",
               PREFECT_SERVER_API_PORT=str(port))
    bindir = Path(sys.executable).parent
    services = Services(api_url=api_url)
    log = state / "server.log"
    services.pids["server"] = _spawn([str(bindir / "prefect"), "server", "start", "--host", "127.0.0.1",
                                      "--port", str(port)], log, env, root)
    _save(root, services)
    _wait("the Prefect server", lambda: healthy(api_url), STARTUP_S, log, services.pids["server"])
    if ray is None:
        ray = os.environ.get("LUMOS_NO_RAY", "0") != "1" and shutil.which("ray", path=str(bindir)) is not None
    if ray:  # the data plane's own starter (lumos/runtime/ray.py), its address kept here too
        from lumos.runtime.ray import start_local_ray

        ray_file = state / "ray.json"
        services.ray_address = start_local_ray(address_file=ray_file, timeout_s=STARTUP_S)
        services.pids["ray"] = json.loads(ray_file.read_text())["pid"]
        _save(root, services)
    env["RAY_ADDRESS"] = services.ray_address or ""
    if not services.ray_address:
        del env["RAY_ADDRESS"]
    if stages:
        sock, log = state / "stages.sock", state / "stages.log"
        services.stage_server = str(sock)
        services.pids["stages"] = _spawn([sys.executable, "-m", "lumos.stage_server", str(sock)], log, env, root)
        _save(root, services)
        _wait("the stage server", sock.exists, STARTUP_S, log, services.pids["stages"])
    if serve:
        log = state / "serve.log"
        services.pids["serve"] = _spawn([sys.executable, "-m", "flows.serve"], log, env, root)
        _save(root, services)
        _wait("the deployments (flows/serve.py)", lambda: _served(api_url, LAST_SERVED), STARTUP_S, log,
              services.pids["serve"])
    _save(root, services)
    return services


def _save(root: Path, services: Services) -> None:
    atomic_write_text(_state_file(root), json.dumps(asdict(services), indent=1) + "\n")


def stop(root: Path | str = ".") -> list[str]:
    """Stop every recorded service (each one's whole session); returns what was stopped."""
    file = _state_file(root)
    if not file.is_file():
        return []
    services = Services(**json.loads(file.read_text()))
    stopped = []
    for name in ("serve", "stages", "ray", "server"):  # the reverse of start's order
        pid = services.pids.get(name)
        if pid is None or not _alive(pid):
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stopped.append(f"{name} ({pid})")
    file.unlink(missing_ok=True)
    (state_dir(root) / "ray.json").unlink(missing_ok=True)
    return stopped


def shell_exports(services: Services, root: Path | str = ".") -> str:
    """`export` lines that point a shell's runs at the services (`eval "$(lumos server env)"`)."""
    env = prefect_env(services.api_url, root)
    if services.ray_address:
        env["RAY_ADDRESS"] = services.ray_address
    if services.stage_server:
        env["LUMOS_STAGE_SERVER"] = services.stage_server
    return "\n".join(f"export {k}={v}" for k, v in env.items())
