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
        subprocess.run(["bash", "scripts/prefect-up.sh", "--no-stage-server"], cwd=root, env=env, check=True,
                       capture_output=True, text=True, timeout=420)
        yield root, env
    finally:
        subprocess.run(["bash", "scripts/prefect-down.sh"], cwd=root, env=env, capture_output=True)


@pytest.fixture(scope="module")
def laion_run(stack):
    """The flow run of `prefect deployment run curate/curate-laion`, watched to its end."""
    root, env = stack
    proc = subprocess.run(["prefect", "deployment", "run", "curate/curate-laion", "--watch",
                           "--watch-timeout", "400"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=450)
    log = root / ".prefect-local" / "serve.log"  # the flow run's own output: what failed
    assert proc.returncode == 0, proc.stdout + proc.stderr + (log.read_text()[-4000:] if log.exists() else "")
    runs = _post(f"{env['PREFECT_API_URL']}/flow_runs/filter",
                 {"flow_runs": {"parent_task_run_id": {"is_null_": True}}})
    (run,) = [r for r in runs if r["deployment_id"]]
    return run


def test_curate_laion_deployment_completes_with_its_funnel(stack, laion_run):
    root, env = stack
    run = laion_run
    api = env["PREFECT_API_URL"]
    assert run["state_type"] == "COMPLETED" and run["parameters"] == {"readers": ["laion"]}
    (funnel,) = _post(f"{api}/artifacts/filter", {"artifacts": {"key": {"any_": ["curate-funnel"]}}})
    assert "| mini-world | 506 |" in funnel["data"]
    progress = _post(f"{api}/artifacts/filter", {"artifacts": {"type": {"any_": ["progress"]}}})
    assert progress and progress[0]["data"] == 100.0
    con = duckdb.connect(str(root / "datasets/catalog.duckdb"), read_only=True)
    n = con.execute(f"SELECT count(*) FROM read_parquet('{root}/datasets/curation/keep/*/kept.parquet')").fetchall()
    assert n[0][0] > 50


def test_prefect_ui_shows_the_run_and_its_funnel_artifact(stack, laion_run, tmp_path):
    """Issue 9: the UI (a SPA served by the server, the V2 UI by default) in headless Chromium."""
    from playwright.sync_api import expect

    from lumos.report.browser import chromium_page

    _, env = stack
    base = env["PREFECT_API_URL"].removesuffix("/api")
    with urllib.request.urlopen(f"{base}/ui-settings", timeout=30) as r:
        ui = json.loads(r.read())
    ui_base = base + (ui["v2_base_url"] or "").rstrip("/")  # where "/" redirects a browser
    (funnel,) = _post(f"{env['PREFECT_API_URL']}/artifacts/filter",
                      {"artifacts": {"key": {"any_": ["curate-funnel"]}}})
    assert funnel["flow_run_id"] == laion_run["id"]
    with chromium_page() as page:
        page.goto(f"{ui_base}/runs/flow-run/{laion_run['id']}?tab=Artifacts")
        expect(page.get_by_text("curate-funnel").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text(laion_run["name"]).first).to_be_visible()
        expect(page.get_by_text("Completed").first).to_be_visible()
        expect(page.get_by_text("curate-laion").first).to_be_visible()  # its deployment
        page.screenshot(path=str(tmp_path / "prefect-ui-flow-run.png"), full_page=True)
        # the artifact's own page renders its markdown funnel table, linked to the run
        page.goto(f"{ui_base}/artifacts/artifact/{funnel['id']}")
        expect(page.locator("table").get_by_text("mini-world")).to_be_visible(timeout=60_000)
        assert "506" in page.locator("table").first.inner_text()
        body = page.locator("body").inner_text()
        assert "curate-funnel" in body and laion_run["name"] in body, body[:2000]
        page.screenshot(path=str(tmp_path / "prefect-ui-artifact.png"), full_page=True)
    assert (tmp_path / "prefect-ui-flow-run.png").stat().st_size > 10_000
