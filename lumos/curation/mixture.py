"""The mixture after `keep`: near duplicates removed across all sources, then per-source quotas.

Both run inside the catalog's DuckDB connection over ``candidates`` (every source's kept rows)
and write one table, ``mixture_rejects`` (uid, source, url, stage, reason), that the catalog's
``images`` view leaves out:

1. ``dedup``: every candidate gets a rank from ``dedup.survivor`` (larger resolution, then higher
   aesthetic, then the source's place in params, then uid). A candidate is dropped when a
   better-ranked one lies within ``dedup.hamming_max`` bits of its pHash, whatever its source;
   the pairs come from :func:`lumos.curation.dedup.near_duplicate_pairs` (exact recall) and
   the drop is one set-based statement over them, so the survivor does not depend on any order.
2. ``quota``: of what survived, each source keeps its ``quota`` rows with the smallest seeded
   hash, the order select sampled by (G.1's 120 / 55 / 10 / 4 / 1 M are met from kept images).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from lumos.config import Curation
from lumos.curation.dedup import losers, near_duplicate_pairs, unique_codes

_ORDER = {  # survivor key -> SQL ordering over candidates joined with source_order
    "resolution": "c.width * c.height DESC NULLS LAST",
    "aesthetic": "c.aesthetic DESC NULLS LAST",
    "source_order": "o.position",
}


def _rank_table(con: duckdb.DuckDBPyConnection, cfg: Curation) -> None:
    """TEMP TABLE ranked (rank, uid, source, url, phash): rank 0 is the best survivor."""
    con.execute("CREATE TEMP TABLE source_order (source VARCHAR, position INTEGER)")
    con.executemany("INSERT INTO source_order VALUES (?, ?)",
                    [(s.name, i) for i, s in enumerate(cfg.sources)])
    order = ", ".join(_ORDER[key] for key in cfg.dedup.survivor)
    con.execute(f"""
        CREATE TEMP TABLE ranked AS
        SELECT row_number() OVER (ORDER BY {order}, c.source, c.uid) - 1 AS rank,
               c.uid, c.source, c.url, c.phash
        FROM candidates c
        LEFT JOIN (SELECT source, position FROM source_order
                   UNION ALL SELECT DISTINCT source, 2147483647 FROM candidates
                   WHERE source NOT IN (SELECT source FROM source_order)) o USING (source)""")


def near_duplicate_losers(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(loser, winner) positions for ``codes`` listed best first: a code loses to the best
    code within ``radius`` that is listed before it (exact copies included)."""
    distinct, which = unique_codes(codes)
    first = np.full(len(distinct), len(codes), np.int64)  # the best position of each code
    np.minimum.at(first, which, np.arange(len(codes)))
    copy = np.flatnonzero(first[which] != np.arange(len(codes)))  # exact copies of a better one
    i, j = near_duplicate_pairs(distinct, radius)
    near_loser, near_winner = losers((first[i], first[j]), np.arange(len(codes)))
    return (np.concatenate([copy, near_loser]), np.concatenate([first[which[copy]], near_winner]))


def mix(con: duckdb.DuckDBPyConnection, cfg: Curation) -> dict:
    """Create ``mixture_rejects`` and ``targets`` from ``candidates``; returns counts."""
    _rank_table(con, cfg)
    codes = con.execute("SELECT phash FROM ranked ORDER BY rank").fetchnumpy()["phash"]
    codes = np.asarray(codes, dtype=np.uint64)
    loser, winner = near_duplicate_losers(codes, cfg.dedup.hamming_max)
    near = pa.table({"loser": pa.array(loser, pa.int64()), "winner": pa.array(winner, pa.int64())})
    con.register("near_pairs", near)
    con.execute("""
        CREATE TABLE mixture_rejects AS
        SELECT l.uid, l.source, l.url, 'dedup' AS stage, 'near duplicate of ' || w.uid AS reason
        FROM near_pairs p JOIN ranked l ON l.rank = p.loser JOIN ranked w ON w.rank = p.winner""")
    con.unregister("near_pairs")
    con.execute("CREATE TABLE targets (source VARCHAR, target BIGINT)")
    targets = [(s.name, s.quota) for s in cfg.sources if s.quota is not None]
    if targets:
        con.executemany("INSERT INTO targets VALUES (?, ?)", targets)
    con.execute(f"""
        INSERT INTO mixture_rejects
        SELECT uid, source, url, 'quota', 'quota: ' || target || ' reached' FROM (
            SELECT r.uid, r.source, r.url, t.target,
                   row_number() OVER (PARTITION BY r.source ORDER BY hash(r.uid || '{cfg.seed}'), r.uid) AS n
            FROM ranked r JOIN targets t USING (source)
            WHERE r.uid NOT IN (SELECT uid FROM mixture_rejects))
        WHERE n > target""")
    return dict(con.execute(
        "SELECT stage, count(*) FROM mixture_rejects GROUP BY ALL ORDER BY ALL").fetchall())
