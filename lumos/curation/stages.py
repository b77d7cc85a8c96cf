"""The curation stages over every source of the mixture, with the project's folder layout.

Each function is one DVC stage's work; `flows/curate.py` wraps them in Prefect flows and the
`lumos` CLI calls them directly.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

from lumos.config import DEFAULT_PARAMS, Profile, Source, load_params
from lumos.curation.catalog import DEFAULT_CATALOG, build_catalog, query
from lumos.curation.download import download_source
from lumos.curation.fetch import download_and_score
from lumos.curation.keep import keep_source
from lumos.curation.score import score_source
from lumos.curation.select import select_source
from lumos.demo import DEFAULT_OUT as MINI_WORLD_DIR
from lumos.demo import serve_mini_world
from lumos.io import atomic_write_text

ROOT = Path("datasets/curation")  # the default of params storage.curation
SELECT, KEEP = ROOT / "select", ROOT / "keep"  # metadata tables: local (the catalog's views read them)
FUNNEL = ROOT / "funnel.json"


def shard_root(profile: Profile, stage: str) -> str:
    """Where ``download`` (img2dataset's shards) and ``scores`` live: storage.curation/<stage>,
    a local folder or a bucket URL (s3://...)."""
    return f"{profile.storage.curation.rstrip('/')}/{stage}"


def sources(profile: Profile, names: list[str] | None = None,
            readers: list[str] | None = None) -> list[Source]:
    """The mixture's sources: all, the named ones, or those read by the given readers."""
    known = {s.name: s for s in profile.curation.sources}
    missing = sorted(set(names or ()) - set(known))
    if missing:
        raise KeyError(f"unknown source(s) {missing}; params has {sorted(known)}")
    return [s for s in known.values()
            if (names is None or s.name in names) and (readers is None or s.reader in readers)]


def run_select(profile: Profile, source: Source) -> dict:
    return select_source(profile.curation, source, SELECT / source.name)


def run_download(profile: Profile, source: Source, on_shard=None) -> dict:
    """img2dataset's download; with ``curation.score_while_downloading`` each finished shard is
    scored meanwhile (``on_shard(done, known, outcome)`` per scored shard)."""
    server = (serve_mini_world(MINI_WORLD_DIR, profile.mini_world.base_url)
              if source.serve_mini_world else nullcontext())
    selected = SELECT / source.name / "selected.parquet"
    download = f"{shard_root(profile, 'download')}/{source.name}"
    with server:
        if not profile.curation.score_while_downloading:
            return download_source(selected, download, profile.curation.download, ray=profile.ray)
        return download_and_score(selected, download, f"{shard_root(profile, 'scores')}/{source.name}",
                                  profile.curation.download, profile.curation.score, ray=profile.ray,
                                  device=profile.device, decode_batch=profile.ray.decode_batch,
                                  on_shard=on_shard)


def run_score(profile: Profile, source: Source, on_shard=None) -> dict:
    """Score on Ray (params ``ray``), on the params' device; ``on_shard(done, total, outcome)``."""
    return score_source(f"{shard_root(profile, 'download')}/{source.name}",
                        f"{shard_root(profile, 'scores')}/{source.name}", profile.curation.score,
                        ray=profile.ray, device=profile.device, on_shard=on_shard,
                        decode_batch=profile.ray.decode_batch)


def run_keep(profile: Profile, source: Source) -> dict:
    return keep_source(SELECT / source.name / "selected.parquet",
                       f"{shard_root(profile, 'download')}/{source.name}",
                       f"{shard_root(profile, 'scores')}/{source.name}", KEEP / source.name,
                       profile.curation.keep_rules(source))


def run_catalog(catalog: Path = DEFAULT_CATALOG, profile: Profile | None = None) -> list[dict]:
    """Build the catalog (cross-source dedup, quotas on what was kept); returns (and writes to
    funnel.json) the funnel per source, with each quota's target and the count reached."""
    profile = profile or load_params(DEFAULT_PARAMS).active
    build_catalog(SELECT, KEEP, catalog, profile.curation)
    rel = query("SELECT * FROM funnel", catalog)
    funnel = [dict(zip(rel.columns, row)) for row in rel.fetchall()]
    by_source = {f["source"]: {k: v for k, v in f.items() if k != "source"} for f in funnel}
    atomic_write_text(FUNNEL, json.dumps(by_source, indent=1) + "\n")  # `dvc metrics show`
    return funnel


SHARDED = {"score"}  # stages that fan shards out to Ray and report each one
def reports_shards(profile: Profile, stage: str) -> bool:
    """Whether the stage reports each shard (``on_shard``): score, and download when it scores too."""
    return stage in SHARDED or (stage == "download" and profile.curation.score_while_downloading)


STAGES = {"select": run_select, "download": run_download, "score": run_score, "keep": run_keep}
