# Sourced by run.sh and test.sh: install into .venv (idempotent, fast when done) and put it
# first on PATH, with the settings that keep every run on loopback (lumos/env.py).
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
eval "$(python -c 'from lumos.env import shell_exports; print(shell_exports())')"
