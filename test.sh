#!/usr/bin/env bash
# The test suite: install (plus Debian's Chromium for the browser tests), then pytest (tiny real
# models, loopback servers started by the tests themselves, no network).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
bash scripts/install-system.sh
# Two workers (pytest-xdist), each test file on one of them: the whole-pipeline file runs beside
# the rest. LUMOS_TEST_WORKERS=0 runs everything in this process.
workers="${LUMOS_TEST_WORKERS:-2}"
# One torch/OpenMP thread per process while workers share the cores: two workers of two threads
# each on two cores ran six CPU-heavy test files 1.8x slower (bench/README.md, "Test suite time").
if [ "$workers" != 0 ]; then export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"; fi
python -m pytest -n "$workers" --dist loadfile "$@"
