"""Prefect flows: thin wrappers that read params, call lumos, and report.

`python -m flows.<module>` hands itself to the run's warm stage server when one is running
(`lumos server start` exports LUMOS_STAGE_SERVER; see lumos/stage_server.py)."""

import os as _os
import sys as _sys

if (_os.environ.get("LUMOS_STAGE_SERVER") and _sys.orig_argv[1:2] == ["-m"]
        and _sys.orig_argv[2:3] and _sys.orig_argv[2].startswith("flows.")):
    from flows._handoff import hand_over

    hand_over(_sys.orig_argv[2], _sys.orig_argv[3:])  # returns only when there is no server
