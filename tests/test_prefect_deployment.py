"""The `curate/curate-laion` deployment, run from the Prefect CLI against a real local server.

scripts/prefect-up.sh starts `prefect server` (SQLite, 127.0.0.1) and flows/serve.py on a
copy of the project; the run is then checked through the server's REST API.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import duckdb
import pytest

from conftest import copy_project, free_port


def _post(url: str, body: dict) -> list[dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root, env = copy_project(tmp_path_factory.mktemp("prefect") / "lumos")
    port = free_port()
    env.update(LUMOS_PREFECT_PORT=str(port), LUMOS_PREFECT_STATE=str(root / ".prefect-local"),
               PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    try:
        subprocess.run(["bash", "scripts/prefect-up.sh"], cwd=root, env=env, check=True,
                       capture_output=True, text=True, timeout=420)
        yield root, env
    finally:
        subprocess.run(["bash", "scripts/prefect-down.sh"], cwd=root, env=env, capture_output=True)


def test_curate_laion_deployment_completes_with_its_funnel(stack):
    root, env = stack
    proc = subprocess.run(["prefect", "deployment", "run", "curate/curate-laion", "--watch",
                           "--watch-timeout", "400"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=450)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = env["PREFECT_API_URL"]
    runs = _post(f"{api}/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"is_null_": True}}})
    (run,) = [r for r in runs if r["deployment_id"]]
    assert run["state_type"] == "COMPLETED" and run["parameters"] == {"readers": ["laion"]}
    (funnel,) = _post(f"{api}/artifacts/filter", {"artifacts": {"key": {"any_": ["curate-funnel"]}}})
    assert "| mini-world | 506 |" in funnel["data"]
    progress = _post(f"{api}/artifacts/filter", {"artifacts": {"type": {"any_": ["progress"]}}})
    assert progress and progress[0]["data"] == 100.0
    con = duckdb.connect(str(root / "datasets/catalog.duckdb"), read_only=True)
    n = con.execute(f"SELECT count(*) FROM read_parquet('{root}/datasets/curation/keep/*/kept.parquet')").fetchall()
    assert n[0][0] > 50
