"""Stage `catalog`: ``datasets/catalog.duckdb``, DuckDB views over every source's results.

Views (paths inside are relative to the project root, where queries run):

    images            every sample of the mixture: key, source, shard, member, width, height,
                      aesthetic, caption, status, uid, url
    rejects           every dropped row with the stage that dropped it and why (select,
                      download, decode, keep, dedup, quota)
    rejects_by_reason counts of rejects per source, stage and reason
    funnel            per source: rows_in -> selected -> downloaded -> decoded -> passed (keep
                      rules) -> unique (after cross-source dedup) -> kept, with the quota's
                      target and the count reached

The dedup and quota steps run here, over every source's ``kept.parquet`` at once
(:mod:`lumos.curation.mixture`); their rejects are the table ``mixture_rejects``.

and, once later stages have run: t2i_subset, captions, images_captioned (images + long caption),
clips and clip_rejects (I2V clips), objects, views and object_rejects (NVS renders).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from lumos.config import Curation
from lumos.curation.mixture import mix

DEFAULT_CATALOG = Path("datasets/catalog.duckdb")


def _q(path: Path | str) -> str:
    return str(path).replace("'", "''")


def build_catalog(select_root: Path | str, keep_root: Path | str, catalog: Path | str,
                  curation: Curation) -> dict:
    """(Re)create the catalog over ``<root>/*/...parquet``: dedup and quotas (``curation``'s
    sources, seed and dedup rules), then the views; returns rows per view."""
    select_root, keep_root, catalog = Path(select_root), Path(keep_root), Path(catalog)
    catalog.parent.mkdir(parents=True, exist_ok=True)
    tmp = catalog.with_name(f".{catalog.name}.tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    con.execute(f"""
        CREATE VIEW candidates AS
        SELECT * FROM read_parquet('{_q(keep_root)}/*/kept.parquet', union_by_name = true)""")
    mix(con, curation)
    con.execute("""
        CREATE VIEW images AS
        SELECT key, source, shard, member, width, height, aesthetic, caption, status, uid, url
        FROM candidates ANTI JOIN mixture_rejects USING (uid)""")
    con.execute(f"""
        CREATE VIEW rejects AS
        SELECT uid, source, url, stage, reason
        FROM read_parquet('{_q(select_root)}/*/rejects.parquet', union_by_name = true)
        UNION ALL
        SELECT uid, source, url, stage, reason
        FROM read_parquet('{_q(keep_root)}/*/rejects.parquet', union_by_name = true)
        UNION ALL
        SELECT uid, source, url, stage, reason FROM mixture_rejects""")
    con.execute("""
        CREATE VIEW rejects_by_reason AS
        SELECT source, stage, regexp_replace(reason, '^(near duplicate of|resolution: true size|quota:) .*$', '\\1') AS reason,
               count(*) AS rows
        FROM rejects GROUP BY ALL ORDER BY source, rows DESC""")
    con.execute("""
        CREATE VIEW funnel AS
        SELECT source,
               count(*) AS rows_in,
               count(*) FILTER (WHERE stage <> 'select') AS selected,
               count(*) FILTER (WHERE stage NOT IN ('select', 'download')) AS downloaded,
               count(*) FILTER (WHERE stage NOT IN ('select', 'download', 'decode')) AS decoded,
               count(*) FILTER (WHERE stage NOT IN ('select', 'download', 'decode', 'keep')) AS passed,
               count(*) FILTER (WHERE stage IN ('quota', 'kept')) AS "unique",
               any_value(t.target) AS target,
               count(*) FILTER (WHERE stage = 'kept') AS reached,
               count(*) FILTER (WHERE stage = 'kept') AS kept
        FROM (SELECT source, 'kept' AS stage FROM images UNION ALL SELECT source, stage FROM rejects)
        LEFT JOIN targets t USING (source)
        GROUP BY source ORDER BY source""")
    counts = {v: con.execute(f"SELECT count(*) FROM {v}").fetchall()[0][0] for v in ("images", "rejects")}
    con.close()
    tmp.replace(catalog)
    return counts


# Views over what later stages add (relative to the project root), defined when their files
# exist: the catalog "gains" them without a stage writing into another stage's output.
CAPTIONS = Path("datasets/t2i/captions/captions.parquet")
T2I_SUBSET = Path("datasets/t2i/subset/subset.parquet")
CLIPS_INDEX = Path("datasets/clips/webvid/index.parquet")
CLIP_REJECTS = Path("datasets/clips/webvid/rejects.parquet")
VIEWS = Path("datasets/renders/views.parquet")
OPTIONAL_VIEWS = {
    "views": (VIEWS, f"SELECT * FROM read_parquet('{VIEWS}')"),
    "objects": (VIEWS, f"SELECT uid, count(*) FILTER (WHERE split = 'objaverse') AS views, "
                       f"count(*) FILTER (WHERE split = 'gso') AS gso_views "
                       f"FROM read_parquet('{VIEWS}') GROUP BY uid"),
    "object_rejects": (Path("datasets/renders/rejects.parquet"),
                       "SELECT * FROM read_parquet('datasets/renders/rejects.parquet')"),
    "clips": (CLIPS_INDEX, f"SELECT * FROM read_parquet('{CLIPS_INDEX}')"),
    "clip_rejects": (CLIP_REJECTS, f"SELECT * FROM read_parquet('{CLIP_REJECTS}')"),
    "captions": (CAPTIONS, f"SELECT * FROM read_parquet('{CAPTIONS}')"),
    "t2i_subset": (T2I_SUBSET, f"SELECT * FROM read_parquet('{T2I_SUBSET}')"),
    "images_captioned": (CAPTIONS, "SELECT i.*, c.long_caption, c.model_id AS caption_model "
                                   "FROM images i LEFT JOIN captions c USING (uid)"),
}


def query(sql: str, catalog: Path | str = DEFAULT_CATALOG) -> duckdb.DuckDBPyRelation:
    """Run SQL against the catalog (read-only), with the optional views whose files exist."""
    return connect(catalog).sql(sql)


def connect(catalog: Path | str = DEFAULT_CATALOG) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog, with the optional views whose files exist."""
    catalog = Path(catalog)
    if not catalog.exists():
        raise FileNotFoundError(f"no catalog at {catalog}: run `dvc repro curate-catalog` first")
    con = duckdb.connect(str(catalog), read_only=True)
    for name, (path, view) in OPTIONAL_VIEWS.items():
        if path.exists():
            con.execute(f"CREATE TEMP VIEW {name} AS {view}")
    return con
