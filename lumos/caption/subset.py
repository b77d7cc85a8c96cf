"""The T2I subset (supplement G.2): kept LAION/COYO images with resolution > 512 and aesthetic
> 5.5, SAM/JourneyDB/ImageNet-1K whole (each source's rule from params), per-source quotas as
seeded samples, written as its own versioned index."""

from __future__ import annotations

import json
from pathlib import Path

from lumos.config import SubsetRule, T2IData
from lumos.curation.catalog import connect
from lumos.io import atomic_write_text, copy_to_parquet


def _rule_sql(rule: SubsetRule) -> str:
    parts = ([f"least(width, height) > {rule.min_side}"] if rule.min_side is not None else []) + \
            ([f"aesthetic > {rule.aesthetic_min}"] if rule.aesthetic_min is not None else [])
    return " AND ".join(parts) or "true"


def select_t2i(catalog: Path | str, cfg: T2IData, out_dir: Path | str) -> dict:
    """Write ``subset.parquet`` (uid, key, source, shard, member, raw_caption) and stats.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    con = connect(catalog)
    sources = [r[0] for r in con.execute("SELECT DISTINCT source FROM images ORDER BY 1").fetchall()]
    passes = " OR ".join(f"(source = '{s}' AND {_rule_sql(cfg.rule(s))})" for s in sources) or "false"
    con.execute(f"""
        CREATE TEMP VIEW eligible AS
        SELECT uid, key, source, shard, member, caption AS raw_caption,
               row_number() OVER (PARTITION BY source ORDER BY hash(uid || '{cfg.seed}'), uid) AS n
        FROM images
        WHERE {passes}""")
    quotas = " OR ".join(f"(source = '{s}' AND n > {q})" for s, q in cfg.quotas.items()) or "false"
    copy_to_parquet(con, f"""SELECT uid, key, source, shard, member, raw_caption FROM eligible
                             WHERE NOT ({quotas}) ORDER BY shard, key""", out / "subset.parquet")
    per_source = dict(con.execute(
        f"SELECT source, count(*) FROM '{out / 'subset.parquet'}' GROUP BY ALL ORDER BY ALL").fetchall())
    eligible = con.execute("SELECT count(*) FROM eligible").fetchall()[0][0]
    stats = {"eligible": eligible, "selected": sum(per_source.values()), "per_source": per_source}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats
