"""The T2I subset (supplement G.2): kept images with resolution > 512 and aesthetic > 5.5,
with per-source quotas as seeded samples, written as its own versioned index."""

from __future__ import annotations

import json
from pathlib import Path

from lumos.config import T2IData
from lumos.curation.catalog import connect
from lumos.io import atomic_write_text, copy_to_parquet


def select_t2i(catalog: Path | str, cfg: T2IData, out_dir: Path | str) -> dict:
    """Write ``subset.parquet`` (uid, key, source, shard, member, raw_caption) and stats.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    con = connect(catalog)
    con.execute(f"""
        CREATE TEMP VIEW eligible AS
        SELECT uid, key, source, shard, member, caption AS raw_caption,
               row_number() OVER (PARTITION BY source ORDER BY hash(uid || '{cfg.seed}'), uid) AS n
        FROM images
        WHERE least(width, height) > {cfg.min_side} AND aesthetic > {cfg.aesthetic_min}""")
    quotas = " OR ".join(f"(source = '{s}' AND n > {q})" for s, q in cfg.quotas.items()) or "false"
    copy_to_parquet(con, f"""SELECT uid, key, source, shard, member, raw_caption FROM eligible
                             WHERE NOT ({quotas}) ORDER BY shard, key""", out / "subset.parquet")
    per_source = dict(con.execute(
        f"SELECT source, count(*) FROM '{out / 'subset.parquet'}' GROUP BY ALL ORDER BY ALL").fetchall())
    eligible = con.execute("SELECT count(*) FROM eligible").fetchall()[0][0]
    stats = {"eligible": eligible, "selected": sum(per_source.values()), "per_source": per_source}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats
