"""Held-out test sets (issue 17): benchmark layouts read by the real readers, disjoint from
every training index of the mini-world, and a pure function of the seed."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from lumos.demo import build_mini_world
from lumos.demo.heldout import WNIDS
from lumos.eval.alignment import alignment_scores
from lumos.video.webvid import read_msrvtt, read_ucf101


@pytest.fixture(scope="module")
def world(params, tmp_path_factory):
    mixture = params.active.mini_world.mixture.model_copy(update={"imagenet": 4, "coyo": 4, "coyo_near_duplicates": 0})
    cfg = params.active.mini_world.model_copy(update={"n_images": 60, "clips": 8, "meshes": 3, "heldout": 4,
                                                      "mixture": mixture})
    root = tmp_path_factory.mktemp("heldout") / "mw"
    build_mini_world(cfg, root)
    return root


def test_heldout_sets_have_the_benchmarks_layouts(world):
    h = world / "heldout"
    coco = json.loads((h / "coco/annotations/captions_val2014.json").read_text())
    assert len(coco["images"]) == len(coco["annotations"]) == 4
    for im in coco["images"]:
        assert im["file_name"].startswith("COCO_val2014_")
        assert Image.open(h / "coco/val2014" / im["file_name"]).size == (im["width"], im["height"])
    assert {p.parent.name for p in (h / "imagenet/val").glob("*/ILSVRC2012_val_*.JPEG")} <= set(WNIDS.values())
    for obj in (h / "gso").iterdir():
        assert (obj / "meshes/model.obj").is_file() and (obj / "materials/textures/texture.png").is_file()
        assert "map_Kd ../materials/textures/texture.png" in (obj / "meshes/model.mtl").read_text()
    ucf = read_ucf101(h / "ucf101")
    msr = read_msrvtt(h / "msrvtt/annotation/MSR_VTT.json", h / "msrvtt/videos/all")
    assert len(ucf) == len(msr) == 4
    assert all(r.caption.startswith("move ") for r in ucf)


def test_heldout_items_are_in_no_training_index(world):
    """No evaluated prompt, image key, object or clip appears where a training stage reads."""
    h = json.loads((world / "heldout/manifest.json").read_text())
    train_texts = set(pq.read_table(world / "metadata.parquet").column("TEXT").to_pylist())
    train_captions = set(pq.read_table(world / "scenes.parquet").column("caption").to_pylist())
    train_keys = {p.stem for p in (world / "images").iterdir()}
    with open(world / "webvid.csv", newline="") as f:
        clips = list(csv.DictReader(f))
    train_clip_names, train_clip_ids = {r["name"] for r in clips}, {r["videoid"] for r in clips}
    train_objects = set(json.loads((world / "objects.json").read_text()))
    assert h["coco_captions"] and not set(h["coco_captions"]) & (train_texts | train_captions)
    assert not set(h["imagenet_keys"]) & train_keys
    assert not set(h["msrvtt_captions"]) & train_clip_names
    assert not set(h["ucf101_keys"]) & train_clip_ids
    assert not set(h["gso_objects"]) & train_objects
    assert all(not p.is_relative_to(world / "heldout") for p in (world / "images").rglob("*"))


def _geometry(mesh_path) -> bytes:
    """A mesh's shape, whatever its file format: sorted unit-box vertices, rounded."""
    import numpy as np

    from lumos.render.renderer import load_mesh, normalize_mesh

    v = np.round(np.asarray(normalize_mesh(load_mesh(mesh_path)).vertices), 4)
    return np.unique(v, axis=0).tobytes()


def test_evaluated_nvs_objects_and_i2v_clips_are_not_training_data(world):
    """What evaluate-nvs and evaluate-i2v read (through their own readers) is no training object
    or clip: by name, by geometry, by frames."""
    import numpy as np

    from lumos.eval.i2v_heldout import heldout_rows
    from lumos.eval.nvs_heldout import check_not_training, gso_objects
    from lumos.render.stages import read_object_list
    from lumos.video.webvid import VideoError, sample_frames

    training = read_object_list(world / "objects.json")
    evaluated = gso_objects(world / "heldout/gso", 100)
    assert len(evaluated) == 2 and training
    check_not_training(list(evaluated), list(training))  # raises on a shared name
    train_shapes = set()
    for path in training.values():  # the mini-world's list holds missing and broken files too
        try:
            train_shapes.add(_geometry(path))
        except (ValueError, OSError, KeyError, IndexError):
            continue
    assert train_shapes
    assert all(_geometry(p) not in train_shapes for p in evaluated.values())
    with pytest.raises(ValueError, match="training objects"):
        check_not_training(list(evaluated), [*training, next(iter(evaluated))])

    with open(world / "webvid.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train_ids = {r["videoid"] for r in rows}
    train_clips = sorted((world / "clips").rglob("*.mp4"))
    assert train_clips
    train_firsts = []
    for path in train_clips:  # the mini-world's clips include broken ones on purpose
        try:
            train_firsts.append(sample_frames(path, 1, 1, 32)[0])
        except VideoError:
            continue
    assert train_firsts
    for name in ("ucf101", "msrvtt"):
        clips = heldout_rows(name, world / "heldout" / name)
        assert len(clips) == 4 and not {c.videoid for c in clips} & train_ids
        for clip in clips:
            first = sample_frames(clip.url.removeprefix("file://"), 1, 1, 32)[0]
            assert not any(np.array_equal(first, t) for t in train_firsts)


def test_heldout_coco_scenes_score_exactly_and_depend_on_the_seed(world, params, tmp_path):
    h = world / "heldout/coco"
    coco = json.loads((h / "annotations/captions_val2014.json").read_text())
    scenes = json.loads((h / "annotations/mini_world_scenes.json").read_text())
    images = [Image.open(h / "val2014" / im["file_name"]).resize((64, 64)) for im in coco["images"]]
    r = alignment_scores(images, [scenes[str(im["id"])] for im in coco["images"]])
    assert r["overall"] == 1.0  # the stand-in's own images, at the T2I sample size
    from lumos.demo.heldout import build_heldout
    other = build_heldout(tmp_path / "s1", n=4, seed=1)
    assert other["coco_captions"] != json.loads((world / "heldout/manifest.json").read_text())["coco_captions"]


def test_report_marks_the_stand_in_and_hides_provenance_columns():
    from lumos.eval.references import benchmark
    from lumos.report.collect import MetricRun
    from lumos.report.tables import build_table

    stand_in = benchmark("datasets/mini-world/heldout/coco/val2014", 12, "Table 2", fid=40.0)
    real = benchmark("data/coco2014/val2014", 30000, "Table 2", fid=9.0)
    t = build_table("t2i", [MetricRun("metrics/t2i.json", "i2i", {"coco30k": stand_in})])
    assert t.groups == [("MS-COCO FID-30K (Table 2) [mini-world stand-in]", 2)]
    assert [c.key for c in t.columns] == ["fid", "samples"]
    t = build_table("t2i", [MetricRun("metrics/t2i.json", "i2i", {"coco30k": real})])
    assert t.groups == [("MS-COCO FID-30K (Table 2)", 2)]


def test_report_shows_table_4_per_elevation_under_gso_without_object_names():
    from lumos.eval.references import benchmark
    from lumos.report.collect import MetricRun
    from lumos.report.tables import build_table

    row = {"psnr": 12.0, "ssim": 0.5, "lpips": 0.4, "views": 30}
    gso = benchmark("datasets/mini-world/heldout/gso", 2, "Table 4", elevation_0=row, elevation_30=row)
    gso["objects"] = ["MiniWorld_Cone_000", "MiniWorld_Box_001"]
    t = build_table("nvs", [MetricRun("metrics/nvs.json", "i2i", {"gso": gso})])
    assert sorted(g for g, _ in t.groups) == ["GSO (Table 4) / Elevation 0° [mini-world stand-in]",
                                              "GSO (Table 4) / Elevation 30° [mini-world stand-in]",
                                              "GSO (Table 4) [mini-world stand-in]"]
    assert {c.key for c in t.columns} == {"psnr", "ssim", "lpips", "views", "samples"}  # no object names
