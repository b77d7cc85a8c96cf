"""A warm start for every stage process of a run: a pre-forking server (as gunicorn's
``--preload`` or Android's zygote) that imports the heavy libraries once and forks a child per
stage, so a `dvc repro` stage costs a fork instead of a Python start plus seconds of imports.

    python -m lumos.stage_server SOCKET       # started by `lumos server start`

`python -m flows.<module> ...` (every dvc.yaml command) hands itself over when
``LUMOS_STAGE_SERVER`` names a live socket (`flows/_handoff.py`, standard library only): it sends
its argv, working directory, environment and its stdin/stdout/stderr (SCM_RIGHTS) here; the
child runs the module exactly as ``python -m`` would, writing straight to those descriptors, and
its exit code goes back. Without the server (a fresh clone, the tests) nothing changes.

Correctness rules:
- Only third-party libraries are preloaded, never `lumos` or `flows`: each child imports the
  project's code fresh from disk, so an edit reruns with the new code.
- A request is refused (the caller then starts normally) when the install changed since the
  server started (the install stamp) or it names another Prefect server than the one this
  process's libraries were configured for.
- Each child is its own session; if its caller dies (DVC interrupted), the child's session is
  ended. Single-threaded event loop (selectors + pidfd): forking never races a thread.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import traceback
from pathlib import Path

# Imported once here; each is what a stage would otherwise import at start (torch alone is
# seconds). None of them starts a thread at import, which keeps forking safe.
PRELOAD = ("numpy", "PIL.Image", "yaml", "pydantic", "pyarrow", "pyarrow.parquet", "duckdb",
           "torch", "torchvision", "safetensors.torch", "transformers", "diffusers", "open_clip",
           "timm", "torchmetrics", "prefect", "prefect.flows", "prefect.artifacts", "fsspec",
           "webdataset", "av", "trimesh", "imagehash", "dvclive",
           # libraries that load their classes lazily: touch the ones the stages build
           "diffusers:AutoencoderKL", "diffusers:PixArtTransformer2DModel",
           "diffusers:DPMSolverMultistepScheduler", "diffusers:DDPMScheduler",
           "transformers:T5EncoderModel", "transformers:Dinov2Model", "transformers:ViTModel",
           "transformers:InternVLForConditionalGeneration", "torch.distributed.checkpoint")
FINGERPRINT_ENV = ("PREFECT_API_URL", "PREFECT_HOME")  # read once, at the libraries' import
HEADER = struct.Struct("!I")


def _stamp(root: Path) -> list[str]:
    return sorted(p.name for p in (root / ".venv").glob(".installed-*"))


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack_from(data)[0]:
        more = conn.recv(1 << 20)
        if not more:
            raise ConnectionError("request cut short")
        data += more
    (size,) = HEADER.unpack_from(data)
    return json.loads(data[HEADER.size: HEADER.size + size]), list(fds)


def _send(conn: socket.socket, message: dict) -> None:
    body = json.dumps(message).encode()
    conn.sendall(HEADER.pack(len(body)) + body)


def _run_child(request: dict, fds: list[int]) -> int:
    """In the forked child: become `python -m <module> <args>` in the caller's place."""
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.stdin, sys.stdout, sys.stderr = (open(i, mode, closefd=False, buffering=1 if i else -1)
                                         for i, mode in ((0, "r"), (1, "w"), (2, "w")))
    sys.path[0] = request["cwd"]
    sys.argv = [request["module"], *request["args"]]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, int) and done.code is not None:
            print(done.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - reported as python -m would, then exit 1
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


class StageServer:
    def __init__(self, path: Path, root: Path) -> None:
        self.root, self.stamp = root, _stamp(root)
        self.fingerprint = {k: os.environ.get(k) for k in FINGERPRINT_ENV}
        self.sel = selectors.DefaultSelector()
        path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(16)
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept", None))

    def refusal(self, request: dict) -> str | None:
        if _stamp(self.root) != self.stamp:
            return "the install changed since the stage server started"
        env = request["env"]
        if any(env.get(k) != v for k, v in self.fingerprint.items()):
            return "another Prefect server than the stage server's"
        return None

    def serve_forever(self) -> None:
        while True:
            for key, _ in self.sel.select():
                kind, state = key.data
                if kind == "accept":
                    self._accept()
                elif kind == "client":  # the caller went away (or spoke): end its child
                    self._caller_gone(key.fileobj, state)
                else:
                    self._child_done(key.fileobj, state)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            request, fds = _recv_request(conn)
        except (OSError, ValueError) as err:
            conn.close()
            print(f"stage server: bad request: {err}", file=sys.stderr)
            return
        why = self.refusal(request)
        if why:
            _send(conn, {"refused": why})
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        pid = os.fork()
        if pid == 0:  # the child: never returns into the loop
            code = 1
            try:
                self.sel.close()
                self.listener.close()
                conn.close()
                code = _run_child(request, fds)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        _send(conn, {"pid": pid})
        state = {"pid": pid, "conn": conn, "pidfd": os.pidfd_open(pid)}
        self.sel.register(conn, selectors.EVENT_READ, ("client", state))
        self.sel.register(state["pidfd"], selectors.EVENT_READ, ("child", state))

    def _caller_gone(self, conn: socket.socket, state: dict) -> None:
        try:
            if conn.recv(1):
                return
        except OSError:
            pass
        self.sel.unregister(conn)
        try:
            os.killpg(state["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _child_done(self, pidfd: int, state: dict) -> None:
        _, status = os.waitpid(state["pid"], 0)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        conn = state["conn"]
        try:
            self.sel.unregister(conn)
        except KeyError:
            pass
        try:
            _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
        except OSError:
            pass
        conn.close()


def preload() -> list[str]:
    missing = []
    for name in PRELOAD:
        module, _, attr = name.partition(":")
        try:
            loaded = importlib.import_module(module)
            if attr:
                getattr(loaded, attr)
        except Exception:  # noqa: BLE001 - an optional library: its stages import it themselves
            missing.append(name)
    return missing


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("socket", type=Path)
    parser.add_argument("--no-preload", action="store_true", help="import nothing ahead (tests)")
    args = parser.parse_args()
    path, root = args.socket.resolve(), Path.cwd()
    sys.path.insert(0, str(root))
    missing = [] if args.no_preload else preload()
    import threading

    print(f"stage server: preloaded {0 if args.no_preload else len(PRELOAD) - len(missing)} libraries"
          f"{f' (not found: {missing})' if missing else ''}; threads: {threading.active_count()}",
          flush=True)
    server = StageServer(path, root)
    for name in [n for n in sys.modules if n.split(".")[0] in ("lumos", "flows")]:
        del sys.modules[name]  # children import the project's code fresh from disk
    server.serve_forever()


if __name__ == "__main__":
    main()
