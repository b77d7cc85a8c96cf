"""Stage `select`: DuckDB SQL over a source's metadata, before anything is downloaded.

Rules, in order (a row is rejected for the first it breaks, and keeps that reason):
unsafe URL (scheme, file://, loopback/private host), declared resolution, declared aesthetic,
punsafe, pwatermark, duplicate URL, and the per-source quota (a seeded sample).

The thresholds are the source's own (``Curation.select_rules``: G.1 filters LAION and COYO and
takes SAM, JourneyDB and ImageNet-1K as they are). The quota here is the source's quota times
``quota_overfetch``: the final quota is drawn after `keep` (catalog), from what survived.
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import fsspec

from lumos.config import Curation, Source
from lumos.curation.sources import INTERNAL_COLUMNS, READERS
from lumos.io import atomic_write_text, copy_to_parquet

_DNS_WORKERS = 32
# String functions rather than regular expressions: these run once per metadata row.
_HTTP = "(starts_with(url, 'http://') OR starts_with(url, 'https://'))"
_HOST = "lower(split_part(split_part(split_part(split_part(split_part(url, '://', 2), '/', 1), '?', 1), '#', 1), ':', 1))"


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
    try:  # an address literal needs no resolver
        ip = str(ipaddress.ip_address(host.strip("[]")))
        return None if _is_public(ip) else f"host {host} resolves to non-public address {ip}"
    except ValueError:
        pass
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


def _or_null(threshold: float | None) -> str:
    """A rule's threshold in SQL; NULL (the rule is off) never rejects."""
    return "NULL" if threshold is None else repr(threshold)


def selection_size(cfg: Curation, source: Source) -> int | None:
    """Rows select passes on for a source with a quota: the quota times the over-fetch."""
    return None if source.quota is None else math.ceil(source.quota * cfg.quota_overfetch)


def select_source(cfg: Curation, source: Source, out_dir: Path | str) -> dict:
    """Select one source's rows; writes selected.parquet, rejects.parquet and stats.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rules, dl = cfg.select_rules(source), cfg.download
    con = duckdb.connect()
    protocol = fsspec.utils.get_protocol(source.metadata)
    if protocol not in ("file", "local"):  # s3://, gs://, memory://...: read through fsspec
        con.register_filesystem(fsspec.filesystem(protocol))
    try:  # views, not tables: the metadata streams through each pass, never held in memory
        con.execute(f"CREATE TEMP VIEW src AS {READERS[source.reader].sql(source.name, source.metadata)}")
        hosts = [r[0] for r in con.execute(
            f"SELECT DISTINCT {_HOST} FROM src WHERE {_HTTP}").fetchall()]
    except duckdb.Error as err:
        raise RuntimeError(f"source {source.name!r}: cannot read {source.metadata!r}: {err}") from err
    refused = _refused_hosts(hosts, list(dl.allow_hosts))
    con.execute("CREATE TEMP TABLE refused (host VARCHAR, why VARCHAR)")
    join = ""
    if refused:  # the join costs a host extraction per row: only when some host is refused
        con.executemany("INSERT INTO refused VALUES (?, ?)", list(refused.items()))
        join = f"LEFT JOIN refused r ON {_HTTP.replace('url', 's.url')} AND r.host = {_HOST.replace('url', 's.url')}"
    cols = ", ".join(f"s.{c}" for c in INTERNAL_COLUMNS)
    why = "r.why" if refused else "NULL"
    con.execute(f"""
        CREATE TEMP VIEW ruled AS
        SELECT {cols}, CASE
            WHEN s.url IS NULL OR NOT ({_HTTP.replace('url', 's.url')} OR starts_with(s.url, 'file://'))
                THEN 'url: unsupported scheme'
            WHEN starts_with(s.url, 'file://') AND NOT {dl.allow_file_urls}
                THEN 'url: file:// not allowed'
            WHEN {why} IS NOT NULL THEN 'url: ' || {why}
            WHEN least(s.width, s.height) <= {_or_null(rules.min_side)} THEN 'resolution'
            WHEN s.aesthetic <= {_or_null(rules.aesthetic_min)} THEN 'aesthetic'
            WHEN s.punsafe > {rules.punsafe_max} THEN 'unsafe'
            WHEN s.pwatermark > {rules.pwatermark_max} THEN 'watermark'
            ELSE NULL END AS reason
        FROM src s {join}
    """)
    # Only the small sets of losers are materialised. Duplicate URLs among the rows still in:
    # the smallest uid wins (a hash aggregate, no sort).
    con.execute("""
        CREATE TEMP TABLE dropped AS
        WITH dup AS (SELECT url, min(uid) AS first FROM ruled WHERE reason IS NULL
                     GROUP BY url HAVING count(*) > 1)
        SELECT r.uid, 'duplicate url' AS why FROM ruled r JOIN dup USING (url)
        WHERE r.reason IS NULL AND r.uid <> dup.first
    """)
    if source.quota is not None:  # a seeded sample: the rows with the smallest seeded hash
        # (the catalog's post-keep quota ranks by the same hash: it takes a prefix of this one)
        con.execute(f"""
            INSERT INTO dropped SELECT uid, 'quota' FROM ruled
            WHERE reason IS NULL AND uid NOT IN (SELECT uid FROM dropped)
            ORDER BY hash(uid || '{cfg.seed}'), uid OFFSET {selection_size(cfg, source)}
        """)
    con.execute("""
        CREATE TEMP VIEW judged AS
        SELECT j.*, coalesce(j.reason, d.why) AS final FROM ruled j LEFT JOIN dropped d USING (uid)
    """)
    cols = ", ".join(INTERNAL_COLUMNS)
    copy_to_parquet(con, f"SELECT {cols} FROM judged WHERE final IS NULL", out / "selected.parquet")
    copy_to_parquet(con, "SELECT uid, source, url, final AS reason, 'select' AS stage FROM judged "
               "WHERE final IS NOT NULL", out / "rejects.parquet")
    selected = con.execute(f"SELECT count(*) FROM '{out / 'selected.parquet'}'").fetchall()[0][0]
    rejected = dict(con.execute(
        f"SELECT reason, count(*) FROM '{out / 'rejects.parquet'}' GROUP BY ALL ORDER BY ALL").fetchall())
    con.close()
    stats = {"source": source.name, "rows_in": selected + sum(rejected.values()),
             "selected": selected, "rejected": rejected}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats




