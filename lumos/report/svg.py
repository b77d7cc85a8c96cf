"""Line charts as inline SVG (no script, no CDN): the report stays one offline file."""

from __future__ import annotations

from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def _tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.2e}"
    return f"{v:.4g}"


def line_chart(title: str, series: list[tuple[str, list[float], list[float]]],
               width: int = 420, height: int = 230) -> str:
    """An SVG chart of ``(label, xs, ys)`` series on shared linear axes."""
    left, right, top, bottom = 64, 12, 26, 40
    pw, ph = width - left - right, height - top - bottom
    points = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys)]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" class="chart-title">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    if not points:
        out.append(f'<text x="{width / 2}" y="{top + ph / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(out)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    for i in range(5):  # horizontal grid lines with value labels
        v = y0 + (y1 - y0) * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 4}" y="{sy(v) + 4:.1f}" text-anchor="end" class="tick">{_tick(v)}</text>')
    for v, anchor in ((x0, "start"), ((x0 + x1) / 2, "middle"), (x1, "end")):
        out.append(f'<text x="{sx(v):.1f}" y="{top + ph + 14}" text-anchor="{anchor}" class="tick">{_tick(v)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" class="tick">step</text>')
    for n, (label, xs, ys) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
        if len(xs) == 1:
            out.append(f'<circle cx="{sx(xs[0]):.1f}" cy="{sy(ys[0]):.1f}" r="3" fill="{colour}"/>')
        elif xs:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        if len(series) > 1 or label:
            ly = top + 12 + 13 * n
            out.append(f'<rect x="{left + pw - 110}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
                       f'<text x="{left + pw - 96}" y="{ly}" class="legend">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
