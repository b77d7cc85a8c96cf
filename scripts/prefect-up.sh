#!/usr/bin/env bash
# Start a local Prefect server (SQLite, 127.0.0.1 only) and the process that serves and runs
# Lumos's deployments (flows/serve.py, the local worker). Stop both with scripts/prefect-down.sh.
#   LUMOS_PREFECT_PORT   server port (default 4200)
#   LUMOS_PREFECT_STATE  folder for the database, logs and pids (default .prefect-local)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

PORT=${LUMOS_PREFECT_PORT:-4200}
STATE=$(realpath -m "${LUMOS_PREFECT_STATE:-.prefect-local}")
mkdir -p "$STATE/home"
export PREFECT_HOME="$STATE/home" PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT="$PORT"

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "prefect-up: $what did not come up in ${limit}s; see $STATE/*.log" >&2
  return 1
}

if ! curl -sf "$PREFECT_API_URL/health" >/dev/null; then
  setsid nohup prefect server start --host 127.0.0.1 --port "$PORT" >"$STATE/server.log" 2>&1 &
  echo $! >"$STATE/server.pid"
  wait_for 180 "the Prefect server" curl -sf "$PREFECT_API_URL/health"
fi
setsid nohup python -m flows.serve >"$STATE/serve.log" 2>&1 &
echo $! >"$STATE/serve.pid"
wait_for 180 "the deployments" prefect deployment inspect lumos-pipeline/lumos-pipeline  # served last

echo "Prefect UI: http://127.0.0.1:$PORT    (logs in $STATE)"
echo "Run a deployment with:"
echo "  export PREFECT_API_URL=$PREFECT_API_URL"
echo "  .venv/bin/prefect deployment run curate/curate-laion --watch"
