"""The warm stage server (lumos/stage_server.py): `python -m flows.<module>` handed over to a
forked child runs as it would alone (argv, cwd, env, output, exit code), with fresh project code,
and falls back to a normal start when refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = '''import os, sys
print("probe", VERSION, os.getcwd(), os.environ.get("PROBE_VALUE"), os.getpid(), os.getppid(), sys.argv[1:],
      flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1:] == ["sleep"]:
    import time; time.sleep(60)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
'''


@pytest.fixture()
def server(tmp_path):
    """A project with flows/probe.py and a stage server (no preload) serving it."""
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    for name in ("__init__.py", "_handoff.py"):
        shutil.copy(ROOT / "flows" / name, project / "flows" / name)
    (project / "flows/probe.py").write_text(PROBE.replace("VERSION", "1"))
    sock = tmp_path / "stages.sock"
    env = dict(os.environ, PYTHONPATH=f"{project}{os.pathsep}{ROOT}", PREFECT_API_URL="http://127.0.0.1:9/api")
    env.pop("LUMOS_STAGE_SERVER", None)
    proc = subprocess.Popen([sys.executable, "-m", "lumos.stage_server", str(sock), "--no-preload"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
        time.sleep(0.1)
    try:
        yield project, dict(env, LUMOS_STAGE_SERVER=str(sock)), proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _probe(project: Path, env: dict, *args: str, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.probe", *args], cwd=project, env=dict(env, **extra),
                          capture_output=True, text=True, timeout=60)


def test_handed_over_stage_runs_as_python_m_would(server):
    project, env, server_pid = server
    done = _probe(project, env, "a", "--b", PROBE_VALUE="x", PROBE_EXIT="3")
    assert done.returncode == 3
    word, version, cwd, value, _, parent, args = done.stdout.strip().split(" ", 6)
    assert (word, version, cwd, value) == ("probe", "1", str(project), "x")
    assert args == "['a', '--b']" and int(parent) == server_pid  # forked by the server
    assert "to stderr" in done.stderr


def test_each_stage_imports_the_project_code_fresh(server):
    project, env, _ = server
    assert _probe(project, env).stdout.split()[1] == "1"
    (project / "flows/probe.py").write_text(PROBE.replace("VERSION", "2"))
    assert _probe(project, env).stdout.split()[1] == "2"


def test_refused_for_another_prefect_server_and_started_normally(server):
    project, env, server_pid = server
    done = _probe(project, env, PREFECT_API_URL="http://127.0.0.1:10/api")
    assert done.returncode == 0 and "another Prefect server" in done.stderr
    assert int(done.stdout.split()[5]) != server_pid  # ran in the caller's own process


def test_no_server_means_a_normal_start(server, tmp_path):
    project, env, server_pid = server
    done = _probe(project, env, LUMOS_STAGE_SERVER=str(tmp_path / "absent.sock"))
    assert done.returncode == 0 and int(done.stdout.split()[5]) != server_pid


def test_killing_the_caller_ends_the_stage(server):
    project, env, _ = server
    caller = subprocess.Popen([sys.executable, "-m", "flows.probe", "sleep"], cwd=project, env=env,
                              stdout=subprocess.PIPE, text=True)
    stage_pid = int(caller.stdout.readline().split()[4])  # the stage started, in the server's child
    assert stage_pid != caller.pid
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 20
    while _alive(stage_pid):
        assert time.monotonic() < deadline, "the stage outlived its killed caller"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):  # gone (also between the two looks)
        return False
