"""Gather the report's inputs from a project tree; whatever is absent is recorded, never raised.

The contract (paths relative to the project root):

    metrics/<task>.json              nested dicts of numbers; an optional "prior" key (i2i|t2i|none)
    metrics/<task>-<prior>.json      baseline runs of the same task (extra rows, as in Tables 4-5)
    models/<run>/dvclive/plots/metrics/**/*.tsv   curves (columns: step, <metric>); <run> is
                                     nvs, nvs-none, ... or nested (t2i/stages/stage-0)
    samples/<task>/**                *.png|*.gif|*.jpg|*.webp images, *.mp4|*.webm clips
    datasets/curation/funnel.json    {source: {rows_in, selected, downloaded, decoded, kept}}
    models/<run>/checkpoints/step-*/config.json   task, step, model_args, lineage (DONE = finished);
                                     lineage.parent: a checkpoint path, or {checkpoint, task, step, ...}
"""

from __future__ import annotations

import base64
import csv
import json
import math
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path

from lumos.report.video import browser_video

TASKS = ("i2i", "t2i", "nvs", "i2v")
FUNNEL = Path("datasets/curation/funnel.json")
IMAGE_SUFFIXES = {".png", ".gif", ".jpg", ".jpeg", ".webp", ".svg"}
VIDEO_SUFFIXES = {".mp4", ".webm"}
MAX_EMBED_BYTES = 16 * 2**20  # larger files are listed, not embedded
MAX_NESTED = 24


@dataclass
class MetricRun:
    """One metrics file: a row of the task's table."""

    path: str
    prior: str | None
    values: dict  # the file's nested dict, "prior" removed


@dataclass
class Curve:
    run: str  # models/<run>
    name: str  # path under plots/metrics without .tsv, e.g. train/loss
    path: str
    steps: list[float]
    values: list[float]


@dataclass
class Media:
    task: str
    path: str
    kind: str  # image | video | skipped
    mime: str
    data_uri: str | None
    size: int
    note: str | None = None


@dataclass
class Checkpoint:
    run: str
    path: str
    step: int | None
    done: bool
    config: dict | None


@dataclass
class Inputs:
    root: Path
    metrics: dict[str, list[MetricRun]] = field(default_factory=dict)
    curves: list[Curve] = field(default_factory=list)
    media: dict[str, list[Media]] = field(default_factory=dict)
    media_not_embedded: dict[str, int] = field(default_factory=dict)  # task -> files left out
    funnel: dict | None = None
    checkpoints: dict[str, list[Checkpoint]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # expected inputs that are not there
    problems: list[str] = field(default_factory=list)  # inputs that are there but unreadable


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _read_json(root: Path, path: Path, inputs: Inputs):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        inputs.problems.append(f"{_rel(root, path)}: {err}")
        return None


def _tasks_with_extras(names: set[str]) -> list[str]:
    return list(TASKS) + sorted(n for n in names if n not in TASKS)


def collect_metrics(inputs: Inputs) -> None:
    folder = inputs.root / "metrics"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    by_task: dict[str, list[Path]] = {}
    for f in files:
        task = f.stem.split("-", 1)[0]
        by_task.setdefault(task, []).append(f)
    for task in _tasks_with_extras(set(by_task)):
        paths = by_task.get(task, [])
        main = folder / f"{task}.json"
        if main not in paths:
            inputs.missing.append(_rel(inputs.root, main) if folder.is_dir() else f"metrics/{task}.json")
        runs = []
        # the task's own file first, then its baselines in name order
        for f in sorted(paths, key=lambda p: (p != main, p.name)):
            data = _read_json(inputs.root, f, inputs)
            if data is None:
                continue
            if not isinstance(data, dict):
                inputs.problems.append(f"{_rel(inputs.root, f)}: expected a JSON object, got {type(data).__name__}")
                continue
            prior = data.get("prior")
            if prior is None and f != main:
                prior = f.stem.split("-", 1)[1]
            values = {k: v for k, v in data.items() if k != "prior"}
            runs.append(MetricRun(_rel(inputs.root, f), None if prior is None else str(prior), values))
        if runs:
            inputs.metrics[task] = runs


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_tsv(path: Path) -> tuple[str, list[float], list[float]]:
    """(metric name, steps, values) of a dvclive TSV; non-numeric cells are skipped."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows:
        return path.stem, [], []
    header = rows[0]
    x = header.index("step") if "step" in header else None
    ys = [i for i, h in enumerate(header) if i != x and h != "timestamp"]
    y = ys[-1] if ys else None
    steps, values = [], []
    for n, row in enumerate(rows[1:]):
        if y is None or y >= len(row):
            continue
        sv = _number(row[x]) if x is not None and x < len(row) else float(n)
        vv = _number(row[y])
        if sv is not None and vv is not None:
            steps.append(sv)
            values.append(vv)
    return (header[y] if y is not None else path.stem), steps, values


def task_of(run: str) -> str:
    """``nvs``, ``nvs-none`` and ``t2i/stages/stage-0`` belong to tasks nvs, nvs and t2i."""
    return run.split("/", 1)[0].split("-", 1)[0]


def collect_curves(inputs: Inputs) -> None:
    models = inputs.root / "models"
    found_runs = set()
    for tsv in sorted(models.glob("**/dvclive/plots/metrics/**/*.tsv")) if models.is_dir() else []:
        parts = tsv.relative_to(models).parts
        run = "/".join(parts[: parts.index("dvclive")])
        base = models / run / "dvclive/plots/metrics"
        try:
            _, steps, values = read_tsv(tsv)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            inputs.problems.append(f"{_rel(inputs.root, tsv)}: {err}")
            continue
        found_runs.add(task_of(run))
        name = tsv.relative_to(base).with_suffix("").as_posix()
        inputs.curves.append(Curve(run, name, _rel(inputs.root, tsv), steps, values))
    for task in TASKS:
        if task not in found_runs:
            inputs.missing.append(f"models/{task}/dvclive/plots/metrics")


def _media(root: Path, task: str, path: Path) -> Media:
    suffix = path.suffix.lower()
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    kind = "image" if suffix in IMAGE_SUFFIXES else "video"
    size = path.stat().st_size
    if size > MAX_EMBED_BYTES:
        return Media(task, _rel(root, path), "skipped", mime, None, size)
    data, note = path.read_bytes(), None
    if kind == "video":
        data, mime, note = browser_video(path)
    uri = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return Media(task, _rel(root, path), kind, mime, uri, size, note)


def collect_media(inputs: Inputs) -> None:
    """The files directly in samples/<task>/ (grids, strips, clips) are embedded; the single
    images in its sub-folders only when there is nothing at the top, at most MAX_NESTED."""
    samples = inputs.root / "samples"
    tasks = {p.name for p in samples.iterdir() if p.is_dir()} if samples.is_dir() else set()
    for task in _tasks_with_extras(tasks):
        folder = samples / task
        files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")
                 and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES] if folder.is_dir() else []
        if not files:
            inputs.missing.append(f"samples/{task}")
            continue
        top = [p for p in files if p.parent == folder] or files[:MAX_NESTED]
        if len(top) < len(files):
            inputs.media_not_embedded[task] = len(files) - len(top)
        inputs.media[task] = []
        for p in top:
            try:
                inputs.media[task].append(_media(inputs.root, task, p))
            except OSError as err:
                inputs.problems.append(f"{_rel(inputs.root, p)}: {err}")


def collect_funnel(inputs: Inputs) -> None:
    path = inputs.root / FUNNEL
    if not path.is_file():
        inputs.missing.append(FUNNEL.as_posix())
        return
    data = _read_json(inputs.root, path, inputs)
    if isinstance(data, list):  # rows of the catalog's funnel view
        data = {str(r.get("source", i)): {k: v for k, v in r.items() if k != "source"}
                for i, r in enumerate(data) if isinstance(r, dict)}
    if isinstance(data, dict):
        inputs.funnel = data
    elif data is not None:
        inputs.problems.append(f"{FUNNEL}: expected an object per source")


def _step(path: Path) -> int | None:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return None


def collect_checkpoints(inputs: Inputs) -> None:
    models = inputs.root / "models"
    runs = sorted({p.parent.relative_to(models).as_posix() for p in models.glob("**/checkpoints")
                   if p.is_dir()}) if models.is_dir() else []
    for task in TASKS:
        if not any(task_of(r) == task for r in runs):
            inputs.missing.append(f"models/{task}/checkpoints")
    order = {t: i for i, t in enumerate(_tasks_with_extras({task_of(r) for r in runs}))}
    for run in sorted(runs, key=lambda r: (order[task_of(r)], r)):
        cks = []
        for d in sorted((models / run / "checkpoints").glob("step-*"), key=lambda p: (_step(p) or -1, p.name)):
            if not d.is_dir():
                continue
            cfg_path = d / "config.json"
            cfg = _read_json(inputs.root, cfg_path, inputs) if cfg_path.is_file() else None
            cks.append(Checkpoint(run, _rel(inputs.root, d), _step(d), (d / "DONE").exists(),
                                  cfg if isinstance(cfg, dict) else None))
        inputs.checkpoints[run] = cks


def collect(root: Path | str = ".") -> Inputs:
    """Everything the report shows, read from the project at ``root``."""
    inputs = Inputs(Path(root))
    collect_metrics(inputs)
    collect_curves(inputs)
    collect_media(inputs)
    collect_funnel(inputs)
    collect_checkpoints(inputs)
    return inputs
