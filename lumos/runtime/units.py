"""Generation units: the generation inside `sample-*` and `evaluate-*` on the per-shard stages'
Ray actors (:func:`lumos.runtime.ray.map_shards`), one code path for a laptop, the tests and a cluster.

A unit is a bounded piece of a stage's generation (a batch of images or prompts, an object, a
clip) that carries its own seed, fixed by the stage before dispatch, so its noise does not depend
on which worker runs it. A :class:`UnitWorker` builds its models once per worker (on ``device``,
the frozen encoders in their precision param), after checking the unit's stamp: a unit whose
result file already holds the same stamp is read back instead of generated (a rerun after a
crash resumes). Each unit's result (features, per-item scores: a few KB) is written whole
(atomically) and returned; the stage merges results in unit order, so a metric is the same on
one worker, many, or in the stage's own process.

    run_units(worker_cls, init_args, units, ray, device)   results in unit order
    stamp(*parts)                                           the hash a unit's result is filed under
    checkpoint_id(ckpt)                                     a checkpoint's identity (path, sizes, times)
    reporting_units(on_done)                                every run_units call inside reports its units
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from lumos.config import RaySettings
from lumos.runtime import storage
from lumos.runtime.device import place, resolve_device
from lumos.runtime.ray import map_shards, model_gpus

Result = dict[str, Any]  # tensors, and JSON-able values (floats, lists, strings)

# Who hears of finished units when a caller passes no on_done (a flow's progress artifact): the
# stages' generation calls sit several functions deep, and the library knows no Prefect.
_PROGRESS: ContextVar[Callable[[int, int, Any], None] | None] = ContextVar("lumos_unit_progress", default=None)


@contextmanager
def reporting_units(on_done: Callable[[int, int, Any], None]) -> Iterator[None]:
    """Inside, every :func:`run_units` call without its own ``on_done`` calls this one as each
    unit finishes: ``on_done(done, total, result)``."""
    token = _PROGRESS.set(on_done)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def stamp(*parts: Any) -> str:
    """A stable hash of JSON-able parts (settings dumps, a unit's inputs and seed)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def checkpoint_id(ckpt: Path | str) -> dict:
    """Path, size and modification time of each file of a checkpoint folder (a local file alone,
    or nothing for a name that is not a local path): a retrained checkpoint at the same path is
    a different one."""
    ckpt = Path(ckpt).resolve()
    files = sorted(p for p in ckpt.rglob("*") if p.is_file()) if ckpt.is_dir() else [ckpt] if ckpt.is_file() else []
    return {"path": str(ckpt), "files": {str(p.relative_to(ckpt) if p != ckpt else p.name):
                                         [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


def write_result(target: str, result: Result, unit_stamp: str) -> None:
    """A unit's result as one safetensors file: tensors as tensors, the rest as JSON metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in result.items() if isinstance(v, torch.Tensor)}
    values = {k: v for k, v in result.items() if not isinstance(v, torch.Tensor)}
    meta = {"stamp": unit_stamp, "values": json.dumps(values)}
    storage.write_bytes_atomic(target, save(tensors, metadata=meta))


def read_result(target: str, unit_stamp: str) -> Result | None:
    """The result filed at ``target`` if it carries ``unit_stamp``, else None."""
    if "://" in target or not Path(target).is_file():
        return None
    try:
        with safe_open(target, framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("stamp") != unit_stamp:
                return None
            return {**json.loads(meta["values"]), **{k: f.get_tensor(k) for k in f.keys()}}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # a foreign or unreadable file: generate again


class UnitWorker:
    """One stage's generation worker, as a Ray actor (a ``ShardHost``) or in the stage's process.

    ``build()`` returns the stage's models by name; modules are placed on ``device``, each in
    its precision param (``precisions[name]``: the frozen encoders' ``features.precision``; None:
    as built, the text encoder applies ``text_encoder.precision`` itself), the rest (the DiT,
    metric extractors) in fp32. Subclasses implement
    :meth:`generate`. Units carry ``index``, ``stamp`` and ``target`` (None: not filed)."""

    def __init__(self, build: Callable[[], dict], device: str = "cpu", precisions: dict | None = None) -> None:
        self.build, self.device, self.precisions = build, resolve_device(device), dict(precisions or {})
        self.models: dict | None = None

    def _models(self) -> dict:
        if self.models is None:
            built = self.build()
            self.models = {k: self._place(m, self.precisions.get(k, "fp32")) for k, m in built.items()}
        return self.models

    def _place(self, m: Any, precision: str | None) -> Any:
        if not isinstance(m, torch.nn.Module):
            return m  # e.g. a CLIP scorer: stays where it was built
        if precision is None:  # built for the device in its own precision (the text encoder)
            return m.to(self.device).eval()
        return place(m, self.device, precision)

    def run(self, unit) -> tuple[int, Result]:
        target = getattr(unit, "target", None)
        if target is not None:
            cached = read_result(target, unit.stamp)
            if cached is not None:  # before any model is built
                return unit.index, cached
        with torch.no_grad():
            result = self.generate(unit, self._models())
        if target is not None:
            write_result(target, result, unit.stamp)
        return unit.index, result

    def generate(self, unit, models: dict) -> Result:
        raise NotImplementedError


class OnDevice(torch.nn.Module):
    """A metric model on the worker's device that takes and returns CPU tensors."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        dev = next(itertools.chain(self.inner.parameters(), self.inner.buffers()), torch.empty(0)).device
        move = lambda v: v.to(dev) if isinstance(v, torch.Tensor) else v  # noqa: E731
        out = self.inner(*map(move, args), **{k: move(v) for k, v in kwargs.items()})
        return out.cpu() if isinstance(out, torch.Tensor) else out


_LOCAL: dict[str, Any] = {}  # the in-process worker of the last spec: a stage's passes share its models


def _local_worker(worker_cls: type, init_args: tuple) -> UnitWorker:
    import pickle

    try:
        token = hashlib.sha256(pickle.dumps((worker_cls, init_args))).hexdigest()
    except (pickle.PicklingError, TypeError, AttributeError):
        token = None
    if token is None or _LOCAL.get("token") != token:
        _LOCAL.clear()  # the previous stage's models go first
        _LOCAL.update(token=token, worker=worker_cls(*init_args))
    return _LOCAL["worker"]


def run_units(worker_cls: type, init_args: tuple, units: Sequence, ray: RaySettings | None, device: str = "cpu",
              on_done: Callable[[int, int, Any], None] | None = None) -> list[Result]:
    """Every unit's result, in unit order, whichever worker ran it: on the per-shard stages'
    Ray actors (:func:`lumos.runtime.ray.map_shards`, a GPU each when ``device`` allows and the
    cluster has one), or in this process when there are at most ``ray.in_process_max_units``
    units (or no ``ray``), with one worker kept for the stage's next call."""
    units = list(units)
    if not units:
        return []
    on_done = on_done or _PROGRESS.get()
    if ray is None or len(units) <= ray.in_process_max_units:
        worker, done = _local_worker(worker_cls, init_args), []
        for n, unit in enumerate(units, 1):
            done.append(worker.run(unit))
            if on_done:
                on_done(n, len(units), done[-1])
    else:
        done = map_shards(worker_cls, init_args, units, ray, gpus_per_task=model_gpus(ray, device), on_done=on_done)
    by_index = dict(done)
    return [by_index[u.index] for u in units]


def clear_results(folder: Path | str) -> None:
    """Drop a stage's filed unit results once its outputs are written (and their parent folder,
    ``.units``, once empty)."""
    import shutil

    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    if folder.parent.name == ".units":
        try:
            folder.parent.rmdir()
        except OSError:
            pass  # another task's units are still there
