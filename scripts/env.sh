# Sourced by run.sh and test.sh: install into .venv (idempotent, fast when done) and put it
# first on PATH, with the settings that keep every run on loopback (lumos/env.py).
# LUMOS_NO_INSTALL=1 skips the install and uses the python already first on PATH (tests do).
if [ -z "${LUMOS_NO_INSTALL:-}" ]; then
  bash scripts/install.sh
  export PATH="$PWD/.venv/bin:$PATH"
fi
eval "$(python -c 'from lumos.env import shell_exports; print(shell_exports())')"
