"""Turn collected inputs into one self-contained HTML page (Jinja2, autoescaped)."""

from __future__ import annotations

import re

import jinja2
from markupsafe import Markup

from lumos.report.collect import TASKS, Checkpoint, Inputs, task_of
from lumos.report.svg import line_chart
from lumos.report.tables import TITLES, build_table, fmt, generic_table
from lumos.report.template import TEMPLATE

SAMPLE_TITLES = {
    "i2i": "I2I: variations and interpolation",
    "t2i": "T2I: sample grids",
    "nvs": "NVS: novel-view strips",
    "i2v": "I2V: clips",
}


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# eval.every's held-out probes (lumos/train/probe.py): the paper's curves (Figs. 2c, 5, 8-12) plot
# FID over steps; these plot eq. (1)'s loss on the held-out set at each saved checkpoint instead.
CURVE_TITLES = {"eval/heldout_loss_imagenet": "held-out loss (ImageNet val, EMA)",
                "eval/heldout_loss_coco": "held-out loss (COCO captions, EMA)"}


def _curve_groups(inputs: Inputs) -> list[dict]:
    """One chart per (task, metric name); runs of a task (models/nvs, models/nvs-none) overlay."""
    charts: dict[tuple[str, str], list] = {}
    for c in inputs.curves:
        charts.setdefault((task_of(c.run), c.name), []).append(c)
    groups: dict[str, list] = {}
    for (task, name), curves in charts.items():
        series = [(c.run if len(curves) > 1 else "", c.steps, c.values) for c in curves]
        groups.setdefault(task, []).append({
            "name": name, "sources": [c.path for c in curves],
            "svg": Markup(line_chart(f"{task} {CURVE_TITLES.get(name, name)}", series))})
    order = list(TASKS) + sorted(t for t in groups if t not in TASKS)
    return [{"task": t, "charts": groups[t]} for t in order if t in groups]


def _funnel(funnel: dict) -> dict:
    sources = {str(k): v for k, v in funnel.items() if isinstance(v, dict)}
    stages: list[str] = []
    for counts in sources.values():
        stages += [k for k in counts if k not in stages]
    if len(sources) > 1:
        sources["all sources"] = {s: sum(c.get(s, 0) for c in sources.values() if _is_num(c.get(s, 0)))
                                  for s in stages}
    rows = []
    for name, counts in sources.items():
        first = counts.get(stages[0]) if stages else None
        cells = []
        for s in stages:
            v = counts.get(s)
            pct = 100.0 * v / first if _is_num(v) and _is_num(first) and first else None
            cells.append({"stage": s, "value": "" if v is None else v, "text": fmt(v), "pct": pct})
        last = counts.get(stages[-1]) if stages else None
        ratio = f"{100.0 * last / first:.1f}%" if _is_num(last) and _is_num(first) and first else "-"
        rows.append({"source": name, "cells": cells, "kept_ratio": ratio})
    return {"stages": stages, "rows": rows}


def _anchor(path: str) -> str:
    return "ckpt-" + re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-")


def _lineage(inputs: Inputs) -> list[dict]:
    known = [c.path for cks in inputs.checkpoints.values() for c in cks]

    def parent_path(parent: object) -> str | None:
        """A parent recorded as a path, or as {"checkpoint": path, "task", "step", ...}."""
        if isinstance(parent, dict):
            parent = parent.get("checkpoint")
        return parent.rstrip("/") if isinstance(parent, str) and parent else None

    def parent_anchor(parent: object) -> str | None:
        p = parent_path(parent)
        match = [k for k in known if p and (p == k or p.endswith("/" + k))]
        return _anchor(match[0]) if match else None

    def view(c: Checkpoint) -> dict:
        cfg = c.config or {}
        lin = cfg.get("lineage") if isinstance(cfg.get("lineage"), dict) else {}
        parent = lin.get("parent")
        return {"path": c.path, "anchor": _anchor(c.path), "step": cfg.get("step", c.step), "done": c.done,
                "task": cfg.get("task", "-"), "prior": fmt(lin.get("prior")) if lin else "-",
                "parent": (parent_path(parent) or fmt(parent)) if lin else "-",
                "parent_anchor": parent_anchor(parent)}

    runs = []
    for run, cks in inputs.checkpoints.items():
        finished = [c for c in cks if c.done and c.config is not None]
        latest = None
        if finished:
            c = finished[-1]
            cfg = c.config
            rows = [("task", fmt(cfg.get("task", c.run))), ("step", fmt(cfg.get("step", c.step)))]
            if isinstance(cfg.get("lineage"), dict):
                rows += [("lineage." + k, v) for k, v in generic_table(cfg["lineage"])]
            else:
                rows.append(("lineage", "missing (no lineage key in config.json)"))
            if isinstance(cfg.get("model_args"), dict):
                rows += [("model_args." + k, v) for k, v in generic_table(cfg["model_args"])]
            latest = {"path": c.path, "task": cfg.get("task", c.run), "step": cfg.get("step", c.step),
                      "rows": rows}
        runs.append({"run": run, "checkpoints": [view(c) for c in cks], "latest": latest})
    return runs


def render(inputs: Inputs, title: str = "Lumos report") -> str:
    """The report's HTML for ``inputs``."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(TEMPLATE)
    tasks = list(TASKS) + sorted(t for t in inputs.metrics if t not in TASKS)
    curve_groups = _curve_groups(inputs)
    lineage = _lineage(inputs)
    return template.render(
        title=title, missing=inputs.missing, problems=inputs.problems,
        tasks=tasks, titles=TITLES,
        tables={t: build_table(t, runs) for t, runs in inputs.metrics.items()},
        curve_groups=curve_groups, curve_tasks={g["task"] for g in curve_groups},
        media_tasks=list(TASKS) + sorted(t for t in inputs.media if t not in TASKS),
        media=inputs.media, not_embedded=inputs.media_not_embedded, sample_titles=SAMPLE_TITLES,
        funnel=_funnel(inputs.funnel) if inputs.funnel else None,
        lineage=lineage, lineage_tasks={task_of(r["run"]) for r in lineage},
    )
