"""Stage `keep`: the thresholds of params applied to the cached scores (no download, no decode).

Every selected row ends either in ``kept.parquet`` or in ``rejects.parquet`` with the stage
that dropped it and why: ``download`` (img2dataset's error), ``decode`` (the score stage's),
or ``keep`` (true resolution, aesthetic). The rules are the source's own
(``Curation.keep_rules``). Near duplicates (across every source) and quotas come after, in the
catalog (:mod:`lumos.curation.mixture`).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from lumos.config import KeepRules
from lumos.io import atomic_write_text, copy_to_parquet
from lumos.runtime import storage


def keep_source(selected: Path | str, download_dir: Path | str, scores_dir: Path | str,
                out_dir: Path | str, rules: KeepRules) -> dict:
    """Join selection, download status and scores; write kept.parquet, rejects.parquet, stats.json."""
    selected, out = Path(selected), Path(out_dir)
    prefix = str(download_dir).rstrip("/").replace("'", "''")  # shard paths as given (relative stays relative)
    download_dir, scores_dir = storage.normalize(download_dir), storage.normalize(scores_dir)  # or URLs
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    storage.register_duckdb(con, download_dir)
    storage.register_duckdb(con, scores_dir)
    shards = storage.glob(download_dir, "shards/*.parquet")
    scores = storage.glob(scores_dir, "*.parquet")
    empty_dl = "SELECT NULL::VARCHAR AS uid, NULL::VARCHAR AS key, NULL::VARCHAR AS status, NULL::VARCHAR AS error_message WHERE false"
    dl = f"SELECT uid, key, status, error_message FROM read_parquet({shards}, union_by_name = true)" if shards else empty_dl
    sc = (f"SELECT * FROM read_parquet({scores})" if scores else
          "SELECT NULL::VARCHAR AS key, NULL::VARCHAR AS shard, NULL::VARCHAR AS member, NULL::VARCHAR AS decode_error, "
          "NULL::BIGINT AS true_width, NULL::BIGINT AS true_height, NULL::UBIGINT AS phash, NULL::DOUBLE AS predicted_aesthetic WHERE false")
    aesthetic = "s.predicted_aesthetic" if rules.aesthetic_from == "predicted" else "sel.aesthetic"
    # A rule set to None is off (G.1 takes SAM, JourneyDB and ImageNet-1K as they are).
    min_side = "NULL" if rules.min_side is None else rules.min_side
    aesthetic_on = rules.aesthetic_min is not None
    aesthetic_min = repr(rules.aesthetic_min) if aesthetic_on else "NULL"
    aesthetic_rule = f"{aesthetic} IS NULL OR {aesthetic} <= {aesthetic_min}" if aesthetic_on else "false"
    con.execute(f"""
        CREATE TEMP TABLE judged AS
        SELECT sel.uid, sel.source, sel.url, sel.caption, d.key,
               '{prefix}/' || s.shard AS shard, s.member,
               s.true_width AS width, s.true_height AS height, s.phash,
               {aesthetic} AS aesthetic, s.predicted_aesthetic, sel.aesthetic AS declared_aesthetic,
               CASE
                 WHEN d.key IS NULL THEN 'download'
                 WHEN d.status <> 'success' THEN 'download'
                 WHEN s.key IS NULL OR s.decode_error IS NOT NULL THEN 'decode'
                 WHEN least(s.true_width, s.true_height) <= {min_side}
                   OR {aesthetic_rule} THEN 'keep'
               END AS stage,
               CASE
                 WHEN d.key IS NULL THEN 'download: no finished shard holds this row'
                 WHEN d.status <> 'success' THEN 'download: ' || coalesce(d.error_message, d.status)
                 WHEN s.key IS NULL THEN 'decode: not scored'
                 WHEN s.decode_error IS NOT NULL THEN 'decode: ' || s.decode_error
                 WHEN least(s.true_width, s.true_height) <= {min_side}
                   THEN 'resolution: true size ' || s.true_width || 'x' || s.true_height
                 WHEN {aesthetic_on} AND {aesthetic} IS NULL THEN 'aesthetic: no score'
                 WHEN {aesthetic} <= {aesthetic_min} THEN 'aesthetic'
               END AS reason
        FROM read_parquet('{selected}') sel
        LEFT JOIN ({dl}) d ON d.uid = sel.uid
        LEFT JOIN ({sc}) s ON s.key = d.key
    """)
    copy_to_parquet(con, "SELECT key, uid, source, shard, member, width, height, aesthetic, "
               "predicted_aesthetic, declared_aesthetic, caption, url, phash, 'kept' AS status "
               "FROM judged WHERE reason IS NULL ORDER BY key", out / "kept.parquet")
    copy_to_parquet(con, "SELECT uid, source, url, caption, stage, reason FROM judged "
               "WHERE reason IS NOT NULL ORDER BY uid", out / "rejects.parquet")
    by_stage = dict(con.execute(
        "SELECT coalesce(stage, 'kept'), count(*) FROM judged GROUP BY ALL ORDER BY ALL").fetchall())
    con.close()
    stats = {"selected": sum(by_stage.values()), "kept": by_stage.pop("kept", 0),
             "rejected_by_stage": by_stage}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats
