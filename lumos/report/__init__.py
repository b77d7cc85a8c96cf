"""The project report (issue 8): one self-contained HTML page of metrics tables laid out like
the paper's, training curves, samples, the curation funnel and each checkpoint's lineage.

    collect.py   read whatever inputs exist (and list the missing ones)
    tables.py    metrics -> paper-style tables (row per method/prior, grouped metric columns)
    svg.py       curves as inline SVG
    render.py    Jinja2 (autoescaped) -> HTML
"""

from __future__ import annotations

from pathlib import Path

from lumos.io import atomic_write_text
from lumos.report.collect import Inputs, collect
from lumos.report.render import render

DEFAULT_OUT = Path("reports/report.html")


def build_report(root: Path | str = ".", out: Path | str | None = None) -> dict:
    """Write the report of the project at ``root`` to ``out`` (atomically); return a summary."""
    root = Path(root)
    out = Path(out) if out is not None else root / DEFAULT_OUT
    inputs = collect(root)
    html = render(inputs)
    atomic_write_text(out, html)
    return summary(inputs, out, len(html.encode()))


def summary(inputs: Inputs, out: Path, size: int) -> dict:
    return {
        "out": str(out), "bytes": size,
        "metrics": {t: [r.path for r in runs] for t, runs in inputs.metrics.items()},
        "curves": len(inputs.curves),
        "samples": {t: len(m) for t, m in inputs.media.items()},
        "funnel": inputs.funnel is not None,
        "checkpoints": {r: len(c) for r, c in inputs.checkpoints.items()},
        "missing": inputs.missing, "problems": inputs.problems,
    }


__all__ = ["DEFAULT_OUT", "build_report", "collect", "render"]
