"""Metric tables laid out like the paper's: a row per run (method or prior), a column per
metric, grouped under a two-level header by the nested key (e.g. Elevation 0° / PSNR)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from lumos.report.collect import MetricRun

TITLES = {
    "i2i": "Table 1: I2I prior, FID on ImageNet-1K val",
    "t2i": "Table 2: T2I FID-30K on MS-COCO; Table 3: text-image alignment (strict, GenEval-like)",
    "nvs": "Table 4: novel view synthesis per elevation, I2I vs T2I prior vs none",
    "i2v": "Table 5: image-to-video FVD/KVD/PIC, I2I vs T2I prior vs none",
}
METRICS = {"fid": "FID", "kid": "KID", "clip_score": "CLIP score", "psnr": "PSNR", "ssim": "SSIM",
           "lpips": "LPIPS", "fvd": "FVD", "kvd": "KVD", "pic": "PIC", "count": "Counting",
           "colour": "Colour", "color": "Colour", "position": "Position", "shape": "Shape", "overall": "Overall",
           "samples": "Samples",
           "loss": "Loss", "is": "IS", "to_input": "to its input", "to_other": "to other inputs",
           "ratio": "Ratio"}
GROUPS = {"ucf101": "UCF-101", "msrvtt": "MSR-VTT", "alignment": "Alignment (GenEval-style)",
          "mscoco": "MS-COCO", "coco": "MS-COCO", "imagenet": "ImageNet-1K val (Table 1)",
          "coco30k": "MS-COCO FID-30K (Table 2)",
          "coco30k_long": "MS-COCO FID-30K, long captions † (Table 2)", "gso": "GSO (Table 4)", "webvid": "WebVid training clips",
          "colour_histogram": "Colour distance (EMD) of a variation (issue 15)",
          "alignment_vae_reconstruction": "Alignment of the VAE's reconstructions of the same images (ceiling)"}
PROVENANCE = {"protocol", "reference", "stand_in", "objects"}  # shown in the group header, not as columns
STAND_IN = " [mini-world stand-in]"
LOWER = {"fid", "kid", "lpips", "fvd", "kvd", "loss", "mse", "to_input", "ratio"}
HIGHER = {"psnr", "ssim", "pic", "clip_score", "count", "colour", "color", "position", "shape", "overall",
          "accuracy", "is", "precision", "recall"}
PRIORS = {"none": "w/o prior", "i2i": "w I2I prior", "t2i": "w T2I prior"}


@dataclass
class Column:
    group: tuple[str, ...]
    key: str
    label: str
    arrow: str  # ↑, ↓ or ""


@dataclass
class Cell:
    text: str
    value: object
    best: bool = False


@dataclass
class Row:
    label: str
    source: str
    cells: list[Cell]


@dataclass
class Table:
    task: str
    title: str
    groups: list[tuple[str, int]]  # (label, colspan) of the first header row; "" for ungrouped
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)


def fmt(v: object) -> str:
    """Numbers as the paper prints them: 2 decimals from 1 up, 4 below, scientific when tiny."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:.2f}" if abs(v) >= 1 else f"{v:.4f}"
    if isinstance(v, str):
        return v
    return json.dumps(v)


def group_label(key: str) -> str:
    if m := re.fullmatch(r"elevation_?(-?\d+)", key):
        return f"Elevation {m.group(1)}°"
    return GROUPS.get(key, key)


def row_label(task: str, run: MetricRun, main: bool) -> str:
    prior = PRIORS.get(run.prior or "", run.prior and f"w {run.prior} prior")
    if main:
        return f"Lumos-{task.upper()}" + (f" ({prior})" if prior else "")
    return prior or run.path


def flatten(d: dict, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += flatten(v, prefix + (str(k),))
        else:
            out.append((prefix + (str(k),), v))
    return out


def _stand_ins(runs: list[MetricRun]) -> set[tuple[str, ...]]:
    """Groups (benchmark keys) whose reference is the mini-world's stand-in in some run."""
    return {path[:-1] for r in runs for path, v in flatten(r.values) if path[-1] == "stand_in" and v is True}


def build_table(task: str, runs: list[MetricRun]) -> Table:
    stand_ins = _stand_ins(runs)
    flat = [{p: v for p, v in flatten(r.values) if p[-1] not in PROVENANCE} for r in runs]
    order: dict[tuple[str, ...], list[str]] = {}  # group -> metric keys, first-seen order
    for f in flat:
        for path in f:
            keys = order.setdefault(path[:-1], [])
            if path[-1] not in keys:
                keys.append(path[-1])
    groups = sorted(order, key=lambda g: (len(g) > 0, list(order).index(g)))  # ungrouped first
    columns = []
    for g in groups:
        for k in order[g]:
            low = k.lower()
            arrow = "↓" if low in LOWER else "↑" if low in HIGHER else ""
            columns.append(Column(g, k, METRICS.get(low, k), arrow))
    table = Table(task, TITLES.get(task, f"{task}: metrics"),
                  [(" / ".join(group_label(p) for p in g)
                    + (STAND_IN if any(g[:len(s)] == s for s in stand_ins) else ""), len(order[g]))
                   for g in groups], columns)
    main_path = f"metrics/{task}.json"
    for run, f in zip(runs, flat):
        cells = [Cell(fmt(f[c.group + (c.key,)]), f[c.group + (c.key,)]) if c.group + (c.key,) in f
                 else Cell("-", None) for c in columns]
        table.rows.append(Row(row_label(task, run, run.path == main_path), run.path, cells))
    if len(runs) > 1:  # mark the best of each column whose direction is known
        for i, c in enumerate(columns):
            nums = [r.cells[i].value for r in table.rows
                    if isinstance(r.cells[i].value, (int, float)) and not isinstance(r.cells[i].value, bool)]
            if c.arrow and len(nums) > 1:
                best = min(nums) if c.arrow == "↓" else max(nums)
                for r in table.rows:
                    r.cells[i].best = r.cells[i].value == best
    return table


def generic_table(d: dict) -> list[tuple[str, str]]:
    """A nested dict as (dotted key, text) rows, for configs and lineage."""
    return [(".".join(path), fmt(v)) for path, v in flatten(d)]
