"""Ray as the engine of every per-shard stage: one code path for a laptop, the tests and a cluster.

Where Ray comes from (params ``ray.address``):

- ``null``: the local Ray that ``lumos server start`` started once for the run, beside the
  Prefect server (:func:`start_local_ray` writes its address to :data:`ADDRESS_FILE`; RAY_ADDRESS
  wins), else a Ray started in this process with this machine's CPUs and GPUs;
- ``auto`` or ``ray://head:10001`` (or ``host:port``): an existing cluster.

Stages fan out with :func:`map_shards`: one long-lived actor per worker slot (a :class:`ShardHost`,
kept for the driver's later stages) holds the stage's models, each call handles one shard and writes its outputs itself (atomically), so only small
summaries travel back. Shards are Ray tasks/actors rather than Ray Data: a stage is a handful to
thousands of coarse shards, Ray Data costs 7-8 s fixed per job here (DESIGN 6), and a shard's
output must be written whole, by the worker that decoded it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lumos.config import RaySettings
from lumos.io import atomic_write_text
from lumos.runtime.storage import forwarded_env

_HEADS: dict[int, subprocess.Popen] = {}  # heads started by this process
ADDRESS_FILE = Path(os.environ.get("LUMOS_RAY_ADDRESS_FILE", ".lumos/ray.json"))
# Retried in place (besides a dead worker, which Ray retries by itself): transient I/O faults.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"local Ray did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def ensure_local_auth_token() -> Path | None:
    """Create Ray's auth token for a Ray started on this machine when token auth is on and none
    exists yet (lumos.env sets ``RAY_AUTH_MODE=token``); returns the token file, None when not needed.

    ``ray start --head`` refuses to start without one, and ``ray.init`` would write one with a plain
    overwrite, so two processes starting Ray at once on a fresh machine could each keep a
    different token. Here the token (Ray's own format: 32 random bytes as hex) is linked into
    place only if the file is still missing, so the first writer wins and everyone reads its token.
    A cluster's token is the user's: this is called only where Ray is started here.
    """
    import secrets
    import tempfile

    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auth_token.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        os.link(tmp, path)  # fails if another process got there first: keep theirs
    except FileExistsError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None,
                    address_file: Path | str = ADDRESS_FILE, timeout_s: float = 120.0) -> str:
    """Start a Ray head on 127.0.0.1 for this run (``ray start --head --block`` in its own process
    group) and record its address; returns it. Stages join it instead of starting their own."""
    address_file = Path(address_file)
    running = local_ray_address(address_file)
    if running:
        return running
    ensure_local_auth_token()
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
           "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
           "--disable-usage-stats"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    address_file.parent.mkdir(parents=True, exist_ok=True)
    log = open(address_file.with_suffix(".log"), "ab")  # noqa: SIM115 - the head's own output
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _HEADS[proc.pid] = proc  # reaped by stop_local_ray when it runs in this process
    try:
        _wait_port(port, timeout_s)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGTERM)
        raise
    address = f"127.0.0.1:{port}"
    atomic_write_text(address_file, json.dumps({"address": address, "pid": proc.pid}) + "\n")
    return address


def local_ray_address(address_file: Path | str = ADDRESS_FILE) -> str | None:
    """The address of the run's local Ray if its head process is still alive, else None."""
    try:
        info = json.loads(Path(address_file).read_text())
        os.kill(info["pid"], 0)
    except (FileNotFoundError, json.JSONDecodeError, KeyError, ProcessLookupError, PermissionError):
        return None
    return info["address"]


def stop_local_ray(address_file: Path | str = ADDRESS_FILE, timeout_s: float = 30.0) -> bool:
    """Stop the Ray head :func:`start_local_ray` started (its process group only); True if one ran."""
    address_file = Path(address_file)
    try:
        pid = json.loads(address_file.read_text())["pid"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)  # the head, its raylet and GCS: one process group
    except ProcessLookupError:
        address_file.unlink(missing_ok=True)
        return False
    head = _HEADS.pop(pid, None)
    deadline = time.monotonic() + timeout_s
    try:
        if head is not None:
            head.wait(timeout_s)  # reap it: a zombie leader would keep the group "alive"
        while time.monotonic() < deadline:
            os.killpg(pid, 0)
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)  # still there after timeout_s
        if head is not None:
            head.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    address_file.unlink(missing_ok=True)
    return True


def ensure_ray(cfg: RaySettings) -> str:
    """Connect this process to Ray as ``cfg`` says (once); returns how ('joined ADDR' or 'local')."""
    import ray

    if ray.is_initialized():
        return "already connected"
    address = cfg.address or os.environ.get("RAY_ADDRESS") or local_ray_address()
    common = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        env = forwarded_env()  # for tasks lumos does not start itself (img2dataset's ray distributor)
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, **common)
        return f"joined {address}"
    # "local", not None: Ray would otherwise join whatever `ray start` last ran on this machine
    ensure_local_auth_token()
    ray.init(address="local", num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus,
             _node_ip_address="127.0.0.1", **common)
    return "local"


def worker_slots(cfg: RaySettings, gpus_per_task: float = 0.0) -> int:
    """How many shard workers the cluster can run at once."""
    import ray

    res = ray.cluster_resources()
    slots = int(res.get("CPU", 1) // cfg.cpus_per_task)
    if gpus_per_task:
        slots = min(slots, int(res.get("GPU", 0) // gpus_per_task))
    return max(1, slots)


class ShardHost:
    """A long-lived Ray actor that runs any stage's shard worker.

    Starting an actor costs a Python process, torch and open_clip imports and the models: tens of
    seconds on a busy machine, against a fraction of a second per small shard. Hosts stay up
    between :func:`map_shards` calls of the same driver (a stage over several sources, score then
    features-i2i in one process), so a worker slot pays that start-up once, not once per call.
    A host keeps one stage's worker at a time; a call for another (class, init_args) drops it
    first. Restarted by Ray after its process died, it rebuilds the worker on its next call.
    """

    def __init__(self) -> None:
        self.token: str | None = None
        self.worker: Any = None

    def run(self, token: str, spec: list, job: Any) -> Any:
        if token != self.token:
            import gc

            import ray

            self.token, self.worker = None, None
            gc.collect()  # the previous stage's models go before the next stage's are built
            worker_cls, init_args = ray.get(spec[0])  # spec: [ObjectRef], resolved only here
            self.worker, self.token = worker_cls(*init_args), token
        return self.worker.run(job)


# This driver's host pool (one at a time), by resources and environment. Idle hosts still hold
# their CPUs/GPUs: Ray work lumos does not start (img2dataset's ray distributor) calls
# release_hosts() first.
_HOSTS: dict[str, list] = {}


def _host_pool(n: int, options: dict) -> list:
    """``n`` hosts with these actor options, reusing this driver's earlier ones."""
    import hashlib

    import ray

    ctx = ray.get_runtime_context()  # a new connection (ray.shutdown, init) starts new pools
    key = hashlib.sha256(json.dumps([ctx.get_job_id(), ctx.get_node_id(), options], sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    if key not in _HOSTS:  # idle hosts of another shape hold CPUs/GPUs this pool may need
        release_hosts()
    pool = _HOSTS.setdefault(key, [])
    actor = ray.remote(ShardHost).options(**options)
    while len(pool) < n:
        pool.append(actor.remote())
    return pool[:n]


def release_hosts() -> None:
    """Stop this driver's shard hosts (they also end with the driver's connection)."""
    import ray

    for pool in _HOSTS.values():
        for host in pool:
            ray.kill(host)
    _HOSTS.clear()


def _spec_token(worker_cls: type, init_args: tuple) -> str:
    """Identifies a stage's worker (class and arguments) across calls."""
    import hashlib

    from ray import cloudpickle

    return hashlib.sha256(cloudpickle.dumps((worker_cls, init_args))).hexdigest()


def map_shards(worker_cls: type, init_args: tuple, jobs: Iterable[Any], cfg: RaySettings, *,
               gpus_per_task: float = 0.0, workers: int | None = None,
               on_done: Callable[[int, int, Any], None] | None = None) -> list[Any]:
    """Run ``worker_cls(*init_args).run(job)`` for every job on a pool of Ray actors.

    The actors are :class:`ShardHost` s that outlive the call: the next call with the same
    resources reuses their processes (imports done), and a call with the same worker reuses its
    models too. A worker process that dies (killed, out of memory) is restarted and its shard run
    again (``cfg.max_retries`` times); an exception raised by the shard itself fails the stage,
    except for :data:`TRANSIENT_ERRORS`. ``on_done(done, total, result)`` is called as shards
    finish. Returns the results in completion order.
    """
    import ray
    from ray.util import ActorPool

    jobs = list(jobs)
    if not jobs:
        return []
    ensure_ray(cfg)
    n = min(len(jobs), workers or worker_slots(cfg, gpus_per_task))
    # a host restarts whenever its process dies (it outlives many shards and stages); each shard
    # is retried cfg.max_retries times
    options = {"num_cpus": cfg.cpus_per_task, "num_gpus": gpus_per_task,
               "max_restarts": -1, "max_task_retries": cfg.max_retries}
    env = forwarded_env()
    if env:  # storage credentials/endpoints of this process (s3://...) for workers started earlier
        options["runtime_env"] = {"env_vars": env}
    token, spec = _spec_token(worker_cls, init_args), [ray.put((worker_cls, init_args))]

    def submit(host, job):
        return host.run.options(retry_exceptions=list(TRANSIENT_ERRORS)).remote(token, spec, job)

    results = []
    try:
        pool = ActorPool(_host_pool(n, options))
        for done, result in enumerate(pool.map_unordered(submit, jobs), 1):
            results.append(result)
            if on_done:
                on_done(done, len(jobs), result)
    except BaseException:
        release_hosts()  # shards still running there must not outlive the failed stage
        raise
    return results


def map_shard_stream(worker_cls: type, init_args: tuple, arrivals: Iterable[list], cfg: RaySettings, *,
                     gpus_per_task: float = 0.0, workers: int | None = None, poll_s: float = 0.5,
                     on_done: Callable[[int, int, Any], None] | None = None,
                     wake: threading.Event | None = None) -> list[Any]:
    """:func:`map_shards` for jobs that appear while it runs (shards another process is still
    writing). ``arrivals`` yields lists of new jobs, possibly empty, and ends when no more will
    come; it is pulled again after each finished shard or every ``poll_s`` seconds, so the hosts
    start (and build their models) before the first job exists; ``wake`` (the producer's "no more
    jobs" event) ends a wait at once, so the last jobs start without a poll's delay. Same hosts,
    retries and failure handling as :func:`map_shards`; ``on_done(done, known so far, result)``."""
    import ray

    ensure_ray(cfg)
    options = {"num_cpus": cfg.cpus_per_task, "num_gpus": gpus_per_task,
               "max_restarts": -1, "max_task_retries": cfg.max_retries}
    env = forwarded_env()
    if env:
        options["runtime_env"] = {"env_vars": env}
    token, spec = _spec_token(worker_cls, init_args), [ray.put((worker_cls, init_args))]
    idle = list(_host_pool(workers or worker_slots(cfg, gpus_per_task), options))
    waiting: list = []
    running: dict = {}  # ObjectRef -> host
    results: list = []
    known, more = 0, True
    source = iter(arrivals)
    try:
        while more or waiting or running:
            if more:
                try:
                    new = next(source)
                    waiting.extend(new)
                    known += len(new)
                except StopIteration:
                    more = False
            while idle and waiting:
                host = idle.pop()
                ref = host.run.options(retry_exceptions=list(TRANSIENT_ERRORS)).remote(token, spec, waiting.pop(0))
                running[ref] = host
            if not running:
                if more:
                    _pause(poll_s, wake)
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=poll_s if more else None)
            for ref in ready:
                idle.append(running.pop(ref))
                results.append(ray.get(ref))
                if on_done:
                    on_done(len(results), known, results[-1])
    except BaseException:
        release_hosts()  # shards still running there must not outlive the failed stage
        raise
    return results


def _pause(seconds: float, wake: threading.Event | None) -> None:
    """Sleep ``seconds``, or less when ``wake`` is set meanwhile."""
    if wake is None:
        time.sleep(seconds)
    else:
        wake.wait(seconds)


def run_local_stream(worker_cls: type, init_args: tuple, arrivals: Iterable[list], poll_s: float = 0.5,
                     on_done: Callable[[int, int, Any], None] | None = None,
                     wake: threading.Event | None = None) -> list[Any]:
    """:func:`map_shard_stream` in this process: each job as it arrives, one after another."""
    worker, results, known = None, [], 0
    for new in arrivals:
        if not new:
            _pause(poll_s, wake)
            continue
        known += len(new)
        worker = worker or worker_cls(*init_args)
        for job in new:
            results.append(worker.run(job))
            if on_done:
                on_done(len(results), known, results[-1])
    return results


def run_shard_stream(worker_cls: type, init_args: tuple, arrivals: Iterable[list], cfg: RaySettings | None, *,
                     device: str = "cpu", expected: int | None = None, workers: int | None = None,
                     poll_s: float = 0.5, on_done: Callable[[int, int, Any], None] | None = None,
                     wake: threading.Event | None = None) -> list[Any]:
    """:func:`run_shards` for jobs that appear while it runs: on Ray when ``cfg`` is given and
    the ``expected`` number of jobs is above ``cfg.in_process_max_shards``, else in this process."""
    if cfg is None or (expected is not None and expected <= cfg.in_process_max_shards):
        return run_local_stream(worker_cls, init_args, arrivals, poll_s, on_done, wake)
    return map_shard_stream(worker_cls, init_args, arrivals, cfg, gpus_per_task=model_gpus(cfg, device),
                            workers=workers, poll_s=poll_s, on_done=on_done, wake=wake)


def run_local(worker_cls: type, init_args: tuple, jobs: Iterable[Any],
              on_done: Callable[[int, int, Any], None] | None = None) -> list[Any]:
    """The same jobs in this process, one after another (``ray: null`` callers, tests, benches)."""
    jobs = list(jobs)
    worker, results = (worker_cls(*init_args) if jobs else None), []
    for done, job in enumerate(jobs, 1):
        results.append(worker.run(job))
        if on_done:
            on_done(done, len(jobs), results[-1])
    return results


def model_gpus(cfg: RaySettings, device: str) -> float:
    """GPUs one model worker reserves: ``cfg.gpus_per_task`` when the device setting allows a GPU
    and the cluster has one, else 0 (the models then run on CPUs)."""
    if device == "cpu":
        return 0.0
    import ray

    ensure_ray(cfg)
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    if device == "cuda" and not has_gpu:
        raise RuntimeError("device is 'cuda' but the Ray cluster has no GPU")
    return cfg.gpus_per_task if has_gpu else 0.0


def run_shards(worker_cls: type, init_args: tuple, jobs: Iterable[Any], cfg: RaySettings | None, *,
               device: str = "cpu", on_done: Callable[[int, int, Any], None] | None = None) -> list[Any]:
    """The one dispatch of every per-shard stage: on Ray actors (:func:`map_shards`, a GPU each
    when ``device`` allows and the cluster has one) when ``cfg`` is given, else in this process;
    also in this process when there are at most ``cfg.in_process_max_shards`` jobs."""
    jobs = list(jobs)
    if cfg is None or len(jobs) <= cfg.in_process_max_shards:
        return run_local(worker_cls, init_args, jobs, on_done)
    return map_shards(worker_cls, init_args, jobs, cfg, gpus_per_task=model_gpus(cfg, device),
                      on_done=on_done)
