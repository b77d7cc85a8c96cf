"""Stage `select`: DuckDB SQL over a source's metadata, before anything is downloaded.

Rules, in order (a row is rejected for the first it breaks, and keeps that reason):
unsafe URL (scheme, file://, loopback/private host), declared resolution, declared aesthetic,
punsafe, pwatermark, duplicate URL, and the per-source quota (a seeded sample).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import fsspec

from lumos.config import Curation, Source
from lumos.curation.sources import INTERNAL_COLUMNS, READERS
from lumos.io import atomic_write_text

_DNS_WORKERS = 32


def _is_public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    return addr.is_global and not addr.is_multicast


def host_refusal(host: str, allow_hosts: list[str]) -> str | None:
    """Why a host must not be fetched (loopback, private, link-local...), or None if fine.

    Names that do not resolve are let through: the download records its own error for them.
    """
    if not host:
        return "no host in URL"
    if host in allow_hosts:
        return None
    try:
        ips = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return None
    private = sorted(ip for ip in ips if not _is_public(ip))
    return f"host {host} resolves to non-public address {private[0]}" if private else None


def _refused_hosts(hosts: list[str], allow_hosts: list[str]) -> dict[str, str]:
    with ThreadPoolExecutor(_DNS_WORKERS) as pool:
        verdicts = pool.map(lambda h: host_refusal(h, allow_hosts), hosts)
    return {h: why for h, why in zip(hosts, verdicts) if why}


def select_source(cfg: Curation, source: Source, out_dir: Path | str) -> dict:
    """Select one source's rows; writes selected.parquet, rejects.parquet and stats.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rules, dl = cfg.select, cfg.download
    con = duckdb.connect()
    protocol = fsspec.utils.get_protocol(source.metadata)
    if protocol not in ("file", "local"):  # s3://, gs://, memory://...: read through fsspec
        con.register_filesystem(fsspec.filesystem(protocol))
    try:
        con.execute(f"CREATE TEMP TABLE src AS {READERS[source.reader].sql(source.name, source.metadata)}")
    except duckdb.Error as err:
        raise RuntimeError(f"source {source.name!r}: cannot read {source.metadata!r}: {err}") from err
    hosts = [r[0] for r in con.execute(
        "SELECT DISTINCT lower(coalesce(regexp_extract(url, '^https?://([^/:?#]+)', 1), '')) "
        "FROM src WHERE regexp_matches(url, '^https?://')").fetchall()]
    refused = _refused_hosts(hosts, list(dl.allow_hosts))
    con.execute("CREATE TEMP TABLE refused (host VARCHAR, why VARCHAR)")
    if refused:
        con.executemany("INSERT INTO refused VALUES (?, ?)", list(refused.items()))
    cols = ", ".join(f"s.{c}" for c in INTERNAL_COLUMNS)
    con.execute(f"""
        CREATE TEMP TABLE judged AS
        SELECT {cols}, CASE
            WHEN s.url IS NULL OR NOT regexp_matches(s.url, '^(https?|file)://')
                THEN 'url: unsupported scheme'
            WHEN starts_with(s.url, 'file://') AND NOT {dl.allow_file_urls}
                THEN 'url: file:// not allowed'
            WHEN r.why IS NOT NULL THEN 'url: ' || r.why
            WHEN least(s.width, s.height) <= {rules.min_side} THEN 'resolution'
            WHEN s.aesthetic <= {rules.aesthetic_min} THEN 'aesthetic'
            WHEN s.punsafe > {rules.punsafe_max} THEN 'unsafe'
            WHEN s.pwatermark > {rules.pwatermark_max} THEN 'watermark'
            ELSE NULL END AS reason
        FROM src s LEFT JOIN refused r
          ON r.host = lower(regexp_extract(s.url, '^https?://([^/:?#]+)', 1))
    """)
    # Duplicate URLs among the rows still in: the first uid wins.
    con.execute("""
        UPDATE judged SET reason = 'duplicate url' WHERE uid IN (
            SELECT uid FROM (SELECT uid, row_number() OVER (PARTITION BY url ORDER BY uid) AS n
                             FROM judged WHERE reason IS NULL) WHERE n > 1)
    """)
    if source.quota is not None:  # a seeded sample: the rows with the smallest seeded hash
        con.execute(f"""
            UPDATE judged SET reason = 'quota' WHERE uid IN (
                SELECT uid FROM judged WHERE reason IS NULL
                ORDER BY hash(uid || '{cfg.seed}'), uid OFFSET {source.quota})
        """)
    _copy(con, f"SELECT {', '.join(INTERNAL_COLUMNS)} FROM judged WHERE reason IS NULL ORDER BY uid",
          out / "selected.parquet")
    _copy(con, "SELECT *, 'select' AS stage FROM judged WHERE reason IS NOT NULL ORDER BY uid",
          out / "rejects.parquet")
    counts = dict(con.execute(
        "SELECT coalesce(reason, 'selected'), count(*) FROM judged GROUP BY ALL ORDER BY ALL").fetchall())
    con.close()
    stats = {"source": source.name, "rows_in": sum(counts.values()),
             "selected": counts.pop("selected", 0), "rejected": counts}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats


def _copy(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    """COPY a query to parquet through a temporary file, then rename (atomic)."""
    tmp = path.with_name(f".{path.name}.tmp")
    con.execute(f"COPY ({query}) TO '{tmp}' (FORMAT parquet)")
    tmp.replace(path)


def select_all(cfg: Curation, out_root: Path | str) -> dict[str, dict]:
    """Run `select` for every source of the mixture; returns the stats by source."""
    return {s.name: select_source(cfg, s, Path(out_root) / s.name) for s in cfg.sources}


