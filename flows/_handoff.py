"""Hand a `python -m flows.<module>` process over to the run's warm stage server
(`lumos/stage_server.py`) when ``LUMOS_STAGE_SERVER`` names one; standard library only, so the
hand-over costs milliseconds. Returns (and the process starts normally) when there is no server,
it refuses (another install or Prefect server), or anything about the socket fails."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

HEADER = struct.Struct("!I")


def _read_message(conn: socket.socket) -> dict:
    data = b""
    while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack_from(data)[0]:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the stage server closed the connection")
        data += chunk
    (size,) = HEADER.unpack_from(data)
    return json.loads(data[HEADER.size: HEADER.size + size])


def hand_over(module: str, args: list[str]) -> None:
    path = os.environ.get("LUMOS_STAGE_SERVER")
    if not path or not os.path.exists(path):
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        body = json.dumps({"module": module, "args": args, "cwd": os.getcwd(),
                           "env": dict(os.environ)}).encode()
        socket.send_fds(conn, [HEADER.pack(len(body)) + body], [0, 1, 2])
        reply = _read_message(conn)
    except (OSError, ValueError):
        conn.close()
        return
    if "refused" in reply:
        print(f"stage server: {reply['refused']}; starting normally", file=sys.stderr)
        conn.close()
        return
    pid = reply["pid"]

    def forward(signum, _frame):  # DVC's Ctrl-C / kill reaches the stage's own session
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            done = _read_message(conn)
            break
        except InterruptedError:
            continue
        except (OSError, ValueError) as err:  # the server died mid-stage: fail the stage, DVC reruns it
            print(f"stage server: lost the stage (pid {pid}) before it finished: {err}", file=sys.stderr)
            os._exit(1)
    os._exit(done["exit"])
