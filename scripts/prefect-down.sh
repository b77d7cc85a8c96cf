#!/usr/bin/env bash
# Stop what scripts/prefect-up.sh started (the deployments' process, then the server).
set -uo pipefail
cd "$(dirname "$0")/.."
STATE=$(realpath -m "${LUMOS_PREFECT_STATE:-.prefect-local}")
for name in serve server; do
  pidfile="$STATE/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "stopped $name ($pid)"
done
