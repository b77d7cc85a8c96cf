"""G.1's mixture on the mini-world: per-source rules, cross-source dedup, quotas after keep.

The LAION-style source comes from the session's `curated` run; the COYO-style parquet (with
planted near duplicates of LAION images) and the ImageNet-style folder of small images are
curated here with the tiny profile's own per-source rules, then catalogued together.
"""

from __future__ import annotations

import shutil

import duckdb
import pyarrow.parquet as pq
import pytest

from lumos.config import Curation, Source
from lumos.curation.catalog import build_catalog, query
from lumos.curation.download import download_source
from lumos.curation.keep import keep_source
from lumos.curation.score import score_source
from lumos.curation.select import select_source
from lumos.demo import serve_mini_world


def _source(params, name: str, root) -> Source:
    src = next(s for s in params.active.curation.sources if s.name == name)
    return src.model_copy(update={"metadata": str(root / src.metadata.split("mini-world/", 1)[1])})


@pytest.fixture(scope="module")
def mixture(params, mini_world, curated, tmp_path_factory):
    """(curation cfg with the three sources, base dir with select/ and keep/ of each)."""
    world_cfg, root, _ = mini_world
    cfg, _, run = curated
    base = tmp_path_factory.mktemp("mixture")
    for stage in ("select", "keep"):
        shutil.copytree(run.base / stage / "mw", base / stage / "mw")
    extra = [_source(params, "coyo-mini", root), _source(params, "imagenet-mini", root)]
    with serve_mini_world(root, world_cfg.base_url):
        for src in extra:
            select_source(cfg, src, base / "select" / src.name)
            download_source(base / "select" / src.name / "selected.parquet", base / "download" / src.name,
                            cfg.download)
    for src in extra:
        score_source(base / "download" / src.name, base / "scores" / src.name, cfg.score)
        keep_source(base / "select" / src.name / "selected.parquet", base / "download" / src.name,
                    base / "scores" / src.name, base / "keep" / src.name, cfg.keep_rules(src))
    laion = Source(name="mw", reader="laion", metadata=str(root / "metadata.parquet"))
    mix_cfg = cfg.model_copy(update={"sources": [laion, *(s.model_copy(update={"quota": None}) for s in extra)]})
    return mix_cfg, base, root


def _catalog(mix_cfg: Curation, base, name: str):
    path = base / f"{name}.duckdb"
    build_catalog(base / "select", base / "keep", path, mix_cfg)
    return path


def test_imagenet_passes_whole_while_the_profile_rules_would_drop_it(params, mixture):
    mix_cfg, base, root = mixture
    index = pq.read_table(root / "imagenet" / "index.parquet").to_pylist()
    assert all(min(r["width"], r["height"]) <= 512 for r in index)  # all below G.1's 512
    kept = duckdb.sql(f"SELECT url, width, height FROM '{base}/keep/imagenet-mini/kept.parquet'").fetchall()
    assert len(kept) == len(index)
    # true sizes are upright: the EXIF-rotated files are measured as shown (= the index)
    assert {(r["path"], r["width"], r["height"]) for r in index} == set(kept)
    strict = _source(params, "imagenet-mini", root).model_copy(update={"select": None, "keep": None})
    stats = select_source(mix_cfg, strict, base / "strict")
    assert stats["selected"] == 0 and stats["rejected"] == {"resolution": len(index)}


def test_coyo_follows_the_g1_thresholds(mixture):
    _, base, root = mixture
    meta = {r["url"]: r for r in pq.read_table(root / "coyo" / "metadata.parquet").to_pylist()}
    kept = {u for (u,) in duckdb.sql(f"SELECT url FROM '{base}/keep/coyo-mini/kept.parquet'").fetchall()}
    expected = {u for u, r in meta.items() if min(r["width"], r["height"]) > 512
                and r["aesthetic_score_laion_v2"] > 5.0 and r["nsfw_score_opennsfw2"] <= 0.5
                and r["watermark_score"] <= 0.8}
    assert kept == expected and 0 < len(kept) < len(meta)


def _planted(root, base):
    """(coyo url, laion url, coyo is larger) for planted pairs that both sources kept."""
    kept = {u for (u,) in duckdb.sql(f"SELECT url FROM read_parquet('{base}/keep/*/kept.parquet')").fetchall()}
    truth = pq.read_table(root / "coyo" / "truth.parquet").to_pylist()
    scenes = {r["URL"]: r for r in pq.read_table(root / "scenes.parquet").to_pylist()}
    copied = {r["duplicate_of"] for r in scenes.values() if r["duplicate_of"]}  # LAION's own exact copies
    kept -= {u for u, r in scenes.items() if r["key"] in copied}
    pairs = [(t["url"], t["duplicate_of"],
              t["true_width"] * t["true_height"] > scenes[t["duplicate_of"]]["true_width"]
              * scenes[t["duplicate_of"]]["true_height"])
             for t in truth if t["kind"] == "near_duplicate"]
    return [p for p in pairs if p[0] in kept and p[1] in kept]


def test_near_duplicates_across_sources_keep_the_larger_copy(mixture):
    mix_cfg, base, root = mixture
    catalog = _catalog(mix_cfg, base, "dedup")
    pairs = _planted(root, base)
    assert {big for _, _, big in pairs} == {True, False}  # both directions are exercised
    images = {u for (u,) in query("SELECT url FROM images", catalog).fetchall()}
    rejects = dict(query("SELECT url, stage || ': ' || reason FROM rejects", catalog).fetchall())
    uid = dict(query("SELECT url, uid FROM rejects UNION ALL SELECT url, uid FROM images", catalog).fetchall())
    for coyo, laion, coyo_larger in pairs:
        winner, loser = (coyo, laion) if coyo_larger else (laion, coyo)
        assert winner in images and loser not in images
        assert rejects[loser] == f"dedup: near duplicate of {uid[winner]}"
    # every image of the mixture is unique: no two within the radius
    hashes = [h for (h,) in duckdb.sql(
        f"SELECT phash FROM read_parquet('{base}/keep/*/kept.parquet') WHERE url IN "
        f"(SELECT unnest(?::VARCHAR[]))", params=[sorted(images)]).fetchall()]
    close = [(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]
             if (a ^ b).bit_count() <= mix_cfg.dedup.hamming_max]
    assert close == []


def test_survivor_order_is_set_in_params(mixture):
    mix_cfg, base, root = mixture
    laion_first = mix_cfg.model_copy(update={"dedup": mix_cfg.dedup.model_copy(
        update={"survivor": ["source_order", "resolution"]})})
    catalog = _catalog(laion_first, base, "laion-first")
    images = {u for (u,) in query("SELECT url FROM images", catalog).fetchall()}
    for coyo, laion, _ in _planted(root, base):
        assert laion in images and coyo not in images


def test_quotas_are_met_from_kept_images_and_the_funnel_shows_them(mixture):
    mix_cfg, base, _ = mixture
    free = _catalog(mix_cfg, base, "free")
    unique = dict(query("SELECT source, count(*) FROM images GROUP BY ALL", free).fetchall())
    quotas = {"mw": unique["mw"] - 7, "coyo-mini": unique["coyo-mini"] + 5}  # one short, one met
    sources = [s.model_copy(update={"quota": quotas.get(s.name)}) for s in mix_cfg.sources]
    catalog = _catalog(mix_cfg.model_copy(update={"sources": sources}), base, "quota")
    rel = query("SELECT * FROM funnel", catalog)
    funnel = {r[0]: dict(zip(rel.columns, r)) for r in rel.fetchall()}
    assert funnel["mw"]["target"] == quotas["mw"] and funnel["mw"]["reached"] == quotas["mw"]
    assert funnel["coyo-mini"]["target"] == quotas["coyo-mini"]
    assert funnel["coyo-mini"]["reached"] == unique["coyo-mini"]  # short: it had no more
    assert funnel["imagenet-mini"]["target"] is None
    for row in funnel.values():
        assert row["decoded"] >= row["passed"] >= row["unique"] >= row["reached"] == row["kept"]
    assert query("SELECT count(*) FROM rejects WHERE stage = 'quota'", catalog).fetchall()[0][0] == 7
    # the quota's sample is the seeded one: the same seed picks the same images
    again = _catalog(mix_cfg.model_copy(update={"sources": sources}), base, "quota-again")
    picks = [sorted(query("SELECT uid FROM images", c).fetchall()) for c in (catalog, again)]
    assert picks[0] == picks[1]
