"""`lumos report` on a small project tree of real files, checked in headless Chromium.

The tree holds real PNG/GIF/MP4 files, metrics JSON (a task's own run and its baselines), a
dvclive TSV, the curation funnel and checkpoint configs with lineage; metrics/i2i.json is left
out on purpose and must show up as missing.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from lumos.demo.clips import encode_mp4
from lumos.report import build_report
from lumos.report.browser import chromium_page, chromium_path

LUMOS = str(Path(sys.executable).parent / "lumos")

METRICS = {
    "t2i.json": {"prior": "i2i", "fid": 41.237, "kid": 0.0123, "clip_score": 0.2871,
                 "alignment": {"count": 0.5, "colour": 0.75, "position": 0.25, "overall": 0.5}},
    "nvs.json": {"prior": "i2i", "elevation_0": {"psnr": 19.63, "ssim": 0.8439, "lpips": 0.1526},
                 "elevation_30": {"psnr": 20.28, "ssim": 0.8419, "lpips": 0.1317}},
    "nvs-t2i.json": {"prior": "t2i", "elevation_0": {"psnr": 17.73, "ssim": 0.8115, "lpips": 0.1763},
                     "elevation_30": {"psnr": 18.12, "ssim": 0.8099, "lpips": 0.1584}},
    "nvs-none.json": {"elevation_0": {"psnr": 12.5, "ssim": 0.61, "lpips": 0.41},
                      "elevation_30": {"psnr": 12.9, "ssim": 0.62, "lpips": 0.40}},
    "i2v.json": {"prior": "i2i", "ucf101": {"fvd": 399.59, "kvd": 39.17, "pic": 0.793},
                 "msrvtt": {"fvd": 271.0, "kvd": 21.16, "pic": 0.7869}},
    "i2v-none.json": {"prior": "none", "ucf101": {"fvd": 2892.09, "kvd": 170.81, "pic": 0.3795},
                      "msrvtt": {"fvd": 1490.64, "kvd": 72.97, "pic": 0.3999}},
}
FUNNEL = {"mini-world": {"rows_in": 506, "selected": 115, "downloaded": 107, "decoded": 95, "kept": 83}}


def _frames(n: int, size: int = 64) -> list[np.ndarray]:
    out = []
    for i in range(n):
        a = np.full((size, size, 3), 40, np.uint8)
        a[:, : size * (i + 1) // n] = (220, 60, 30)
        a[size // 4: size // 2, size // 4: size // 2] = (30, 90, 220)
        out.append(a)
    return out


def _png(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = np.concatenate(_frames(w // 64), axis=1)[:h]
    Image.fromarray(grid).save(path)


def _gif(path: Path) -> None:
    frames = [Image.fromarray(f) for f in _frames(6)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=120, loop=0)


def _mp4_h264(path: Path) -> None:
    """H.264, which Chromium plays as is."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for f in _frames(8):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _checkpoint(root: Path, run: str, step: int, done: bool, lineage: dict | None) -> str:
    d = root / "models" / run / "checkpoints" / f"step-{step:07d}"
    cfg = {"task": run.split("/")[0].split("-")[0], "step": step,
           "model_args": {"variant": "tiny", "latent_size": 8, "condition_dim": 32}}
    if lineage is not None:
        cfg["lineage"] = lineage
    _write_json(d / "config.json", cfg)
    if done:
        (d / "DONE").touch()
    return d.relative_to(root).as_posix()


def make_project(root: Path) -> Path:
    for name, data in METRICS.items():
        _write_json(root / "metrics" / name, data)
    for run, offset in (("i2i", 0.0), ("nvs", 0.0), ("nvs-none", 0.3)):
        tsv = root / "models" / run / "dvclive/plots/metrics/train/loss.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        tsv.write_text("step\tloss\n" + "".join(f"{s}\t{1.5 / s + offset}\n" for s in range(1, 21)))
    probe = root / "models/i2i/dvclive/plots/metrics/eval/heldout_loss_imagenet.tsv"  # eval.every
    probe.parent.mkdir(parents=True)
    probe.write_text("step\theldout_loss_imagenet\n10\t0.9\n20\t0.7\n")
    _png(root / "samples/i2i/variations.png", 320, 256)
    _png(root / "samples/i2i/interpolation.png", 512, 64)
    _png(root / "samples/t2i/grid.png", 256, 256)
    _png(root / "samples/nvs/strip-000.png", 512, 64)
    for view in range(3):  # per-view images in a sub-folder: counted, not embedded
        _png(root / f"samples/nvs/000/{view:03d}.png", 64, 64)
    (root / "samples/i2v").mkdir(parents=True)
    _gif(root / "samples/i2v/clip-000.gif")
    # the pipeline's own MP4s are MPEG-4 Part 2, which the report re-encodes for the browser
    (root / "samples/i2v/clip-000.mp4").write_bytes(encode_mp4(_frames(8), fps=8))
    _mp4_h264(root / "samples/i2v/clip-001.mp4")
    _write_json(root / "datasets/curation/funnel.json", FUNNEL)
    data = {"images": "datasets/curation/keep", "features": "datasets/features/i2i"}
    parent = _checkpoint(root, "i2i", 10, True, {"prior": "none", "parent": None, "datasets": data})
    _checkpoint(root, "i2i", 20, False, {"prior": "none", "parent": None, "datasets": data})  # unfinished
    # T2I's progressive stages nest (models/t2i/stages/stage-<i>); parents are recorded as dicts
    captions = {"path": "datasets/t2i/captions", "dvc_output": "datasets/t2i/captions", "dvc_md5": "ab12.dir"}
    _checkpoint(root, "t2i/stages/stage-0", 5, True, {
        "prior": "i2i", "parent": {"checkpoint": parent, "task": "i2i", "step": 10, "sha256_16": "0123abcd"},
        "datasets": {"captions": captions}})
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("project"))
    out = root / "reports/report.html"
    proc = subprocess.run([LUMOS, "report", "--root", str(root), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, out, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def page(report):
    if chromium_path() is None:
        pytest.fail("Chromium is not installed: run scripts/install-system.sh")
    _, out, _ = report
    with chromium_page() as page:
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 1)",
                               timeout=15000)
        yield page


def _cell(page, task: str, source: str, group: str, metric: str) -> str:
    sel = (f'table.metrics[data-task="{task}"] tr[data-source="{source}"] '
           f'td[data-group="{group}"][data-metric="{metric}"]')
    return page.locator(sel).inner_text()


def test_summary_lists_what_was_found_and_what_is_missing(report):
    _, out, summary = report
    assert out.is_file() and summary["out"] == str(out)
    assert summary["metrics"]["nvs"] == ["metrics/nvs.json", "metrics/nvs-none.json", "metrics/nvs-t2i.json"]
    assert summary["samples"] == {"i2i": 2, "t2i": 1, "nvs": 1, "i2v": 3}
    assert "metrics/i2i.json" in summary["missing"] and summary["problems"] == []
    html = out.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert "<script" not in html


def test_metric_tables_read_like_the_papers(page):
    # Table 4: a row per prior, PSNR/SSIM/LPIPS under each elevation
    assert _cell(page, "nvs", "metrics/nvs.json", "elevation_0", "psnr") == "19.63"
    assert _cell(page, "nvs", "metrics/nvs-t2i.json", "elevation_30", "psnr") == "18.12"
    assert _cell(page, "nvs", "metrics/nvs-t2i.json", "elevation_0", "ssim") == "0.8115"
    assert _cell(page, "nvs", "metrics/nvs-none.json", "elevation_30", "lpips") == "0.4000"
    heads = page.locator('table.metrics[data-task="nvs"] thead').inner_text()
    assert "Elevation 0°" in heads and "Elevation 30°" in heads and "PSNR↑" in heads and "LPIPS↓" in heads
    labels = page.locator('table.metrics[data-task="nvs"] tbody td.label:not(.source)').all_inner_texts()
    assert labels == ["Lumos-NVS (w I2I prior)", "w/o prior", "w T2I prior"]
    # Table 5: UCF-101 / MSR-VTT; the best of each column is bold
    assert _cell(page, "i2v", "metrics/i2v-none.json", "ucf101", "fvd") == "2892.09"
    assert _cell(page, "i2v", "metrics/i2v.json", "msrvtt", "pic") == "0.7869"
    best = page.locator('table.metrics[data-task="i2v"] tr[data-source="metrics/i2v.json"] td.best')
    assert best.count() == 6
    # T2I: top-level scalars, then the alignment group
    assert _cell(page, "t2i", "metrics/t2i.json", "", "fid") == "41.24"
    assert _cell(page, "t2i", "metrics/t2i.json", "alignment", "colour") == "0.7500"


def test_missing_metrics_file_is_shown_as_missing(page):
    missing = page.locator('#metrics [data-missing="metrics/i2i.json"]')
    assert missing.is_visible() and "missing" in missing.inner_text()
    assert page.locator('table.metrics[data-task="i2i"]').count() == 0
    assert "metrics/i2i.json" in page.locator("#missing-inputs").inner_text()


def test_images_decode_and_video_plays(page):
    widths = page.evaluate("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(widths) == 5  # 2 i2i + 1 t2i + 1 nvs + 1 gif
    assert all(done and w > 0 for _, done, w in widths), widths
    assert dict((a, w) for a, _, w in widths)["samples/i2i/interpolation.png"] == 512
    video = page.evaluate("[...document.querySelectorAll('video')].map(v => [v.videoWidth, v.error])")
    assert video == [[64, None], [64, None]]  # both decode, the MPEG-4 one after re-encoding
    assert "mpeg4 re-encoded to H.264" in page.locator('figure[data-path="samples/i2v/clip-000.mp4"]').inner_text()
    assert "3 more image(s)" in page.locator("#samples").inner_text()
    assert page.locator("svg.chart").count() == 3  # i2i loss and held-out loss; nvs loss with nvs-none
    assert page.locator("svg.chart polyline").count() == 4
    assert page.locator('figure.curve[data-name="eval/heldout_loss_imagenet"]').count() == 1
    assert "held-out loss (ImageNet val, EMA)" in page.locator("#curves").inner_text()


def test_funnel_and_lineage(page):
    row = page.locator('#funnel-table tr[data-source="mini-world"]')
    assert row.locator('td[data-stage="rows_in"]').get_attribute("data-value") == "506"
    assert row.locator('td[data-stage="kept"]').get_attribute("data-value") == "83"
    assert "16.4%" in row.inner_text()
    t2i = page.locator('table.checkpoints[data-run="t2i/stages/stage-0"] tbody tr')
    assert t2i.count() == 1 and "i2i" in t2i.inner_text()
    link = t2i.locator("a")
    assert link.inner_text() == "models/i2i/checkpoints/step-0000010"
    assert page.locator(link.get_attribute("href")).count() == 1  # the parent's row is in the report
    i2i = page.locator('table.checkpoints[data-run="i2i"] tbody tr').all_inner_texts()
    assert "yes (DONE)" in i2i[0] and "no" in i2i[1]
    lineage = page.locator('table.lineage[data-run="t2i/stages/stage-0"]').inner_text()
    assert "lineage.prior\ti2i" in lineage and "lineage.parent.sha256_16\t0123abcd" in lineage
    assert "lineage.datasets.captions.dvc_md5\tab12.dir" in lineage
    assert "model_args.latent_size\t8" in lineage


def test_screenshot_is_not_blank(page, report):
    root, _, _ = report
    shot = root / "reports/report.png"
    page.screenshot(path=str(shot), full_page=True)
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert img.shape[0] > 1000 and img.shape[1] >= 1280
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50 and img.std() > 10


def test_report_of_an_empty_or_broken_tree_lists_what_is_missing(tmp_path):
    summary = build_report(tmp_path)
    html = (tmp_path / "reports/report.html").read_text()
    assert summary["metrics"] == {} and summary["funnel"] is False
    for path in ("metrics/t2i.json", "samples/nvs", "datasets/curation/funnel.json", "models/i2v/checkpoints"):
        assert path in summary["missing"] and f'data-missing="{path}"' in html
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/nvs.json").write_text("{not json")
    _write_json(tmp_path / "metrics/i2v.json", {"ucf101": {"fvd": 1.5, "note": "<b>x</b>"}})
    summary = build_report(tmp_path)
    assert summary["problems"] and summary["problems"][0].startswith("metrics/nvs.json")
    html = (tmp_path / "reports/report.html").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html  # escaped
