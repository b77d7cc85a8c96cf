"""Time outside stage work in a whole tiny-profile `dvc repro` (issue 15).

    python bench/pipeline_overhead.py [--baseline]

Clones the repository's HEAD into a temporary folder, starts its services there
(`lumos server start`: Prefect server, Ray head, warm stage server) on a free port, runs
`dvc repro` and reads every stage's flow run back from the Prefect API. Stage work is the sum of
the top-level flow runs' run time (each flow's body: the library's work); everything else in the
wall time is overhead: process start and imports, the Prefect client, DVC's hashing and
locking. `--baseline` also runs the same repro without the stage server (each stage a fresh
Python), side by side. `--api URL --wall S` measures a run that already happened instead (e.g. a
timed `bash run.sh` against a fresh server). Last line: `RESULT overhead_fraction=<x>` (target
< 0.15).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flow_runs(api: str) -> list[dict]:
    runs, offset = [], 0
    while True:
        body = {"flow_runs": {"parent_task_run_id": {"is_null_": True}}, "limit": 200, "offset": offset}
        req = urllib.request.Request(f"{api}/flow_runs/filter", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            page = json.loads(r.read())
        runs += page
        if len(page) < 200:
            return runs
        offset += 200


def flow_names(api: str) -> dict[str, str]:
    req = urllib.request.Request(f"{api}/flows/filter", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return {f["id"]: f["name"] for f in json.loads(r.read())}


def one_run(stage_server: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lumos-overhead-"))
    clone = work / "lumos"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    os.symlink(ROOT / ".venv", clone / ".venv")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(clone),
               LUMOS_NO_INSTALL="1", LUMOS_PREFECT_PORT=str(free_port()),
               LUMOS_PREFECT_STATE=str(work / "state"))
    for key in ("PREFECT_API_URL", "RAY_ADDRESS", "LUMOS_STAGE_SERVER"):
        env.pop(key, None)
    lumos = [str(BIN / "lumos"), "server"]
    try:
        subprocess.run([*lumos, "start", *([] if stage_server else ["--no-stage-server"])], cwd=clone,
                       env=env, check=True)
        exports = subprocess.run([*lumos, "env"], cwd=clone, env=env, check=True, capture_output=True,
                                 text=True).stdout
        env.update(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
        start = time.monotonic()
        proc = subprocess.run([str(BIN / "dvc"), "repro"], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(f"dvc repro failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        api = env["PREFECT_API_URL"]
        names = flow_names(api)
        per_stage = {}
        for run in flow_runs(api):
            name = names.get(run["flow_id"], run["name"])
            per_stage[name] = per_stage.get(name, 0.0) + float(run["total_run_time"] or 0.0)
        stages = proc.stdout.count("Running stage '")
    finally:
        subprocess.run([*lumos, "stop"], cwd=clone, env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    stage_work = sum(per_stage.values())
    return {"wall_s": wall, "stage_work_s": stage_work, "stages": stages, "per_stage_s": per_stage,
            "overhead_fraction": 1 - stage_work / wall}


def report(label: str, result: dict) -> None:
    print(f"\n{label}: {result['stages']} stages, wall {result['wall_s']:.0f} s, stage work "
          f"{result['stage_work_s']:.0f} s, overhead {result['wall_s'] - result['stage_work_s']:.0f} s "
          f"({100 * result['overhead_fraction']:.1f} %)")
    for name, seconds in sorted(result["per_stage_s"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:24s} {seconds:7.1f} s")


def existing_run(api: str, wall: float) -> dict:
    """The split of a `dvc repro` that already ran against ``api`` (e.g. `bash run.sh`, timed)."""
    names = flow_names(api)
    per_stage: dict[str, float] = {}
    for run in flow_runs(api):
        if run["state_type"] == "COMPLETED" and names.get(run["flow_id"]) != "lumos-pipeline":
            name = names.get(run["flow_id"], run["name"])
            per_stage[name] = per_stage.get(name, 0.0) + float(run["total_run_time"] or 0.0)
    work = sum(per_stage.values())
    return {"wall_s": wall, "stage_work_s": work, "stages": len(per_stage), "per_stage_s": per_stage,
            "overhead_fraction": 1 - work / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", action="store_true", help="also run without the stage server")
    parser.add_argument("--api", help="measure a finished run on this Prefect API instead (its server's "
                                      "only run), with --wall its timed wall seconds")
    parser.add_argument("--wall", type=float, help="wall seconds of that run's `dvc repro`")
    args = parser.parse_args()
    if args.api:
        if not args.wall:
            parser.error("--api needs --wall")
        result = existing_run(args.api, args.wall)
        report("the timed run", result)
        print(f"RESULT overhead_fraction={result['overhead_fraction']:.3f}")
        return
    warm = one_run(stage_server=True)
    report("with the warm stage server", warm)
    if args.baseline:
        cold = one_run(stage_server=False)
        report("baseline: a fresh Python per stage", cold)
        print(f"\noverhead: {cold['wall_s'] - cold['stage_work_s']:.0f} s -> "
              f"{warm['wall_s'] - warm['stage_work_s']:.0f} s")
    print(f"RESULT overhead_fraction={warm['overhead_fraction']:.3f}")


if __name__ == "__main__":
    main()
