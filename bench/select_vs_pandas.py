"""Benchmark: lumos's DuckDB `select` stage against a pandas baseline doing the same rules.

Generates (numpy seed 0) an N-row LAION-5B-schema metadata set as several parquet files, then
runs each engine in its own subprocess of this script and reads back its wall time and peak RSS
(VmHWM):

  duckdb  lumos.curation.select.select_source (writes selected + rejects parquet and stats.json)
  pandas  read_parquet, the same rules (scheme, host safety, min side, aesthetic, punsafe,
          pwatermark), sort by uid + drop_duplicates(url) (first uid wins), write selected parquet

Both must select exactly the same uids. Targets: duckdb >= 5x faster at <= 1/3 the peak memory.

    .venv/bin/python bench/select_vs_pandas.py                    # 10 M rows (a few minutes)
    .venv/bin/python bench/select_vs_pandas.py --rows 1000000 --workdir /tmp/selbench
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
WORDS = np.array(["a photo of a cat", "sunset over the sea", "red car on a street", "mountain lake",
                  "portrait of a woman", "bowl of fruit", "city skyline at night", "a dog running"])


def _str(x: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(x), pa.string())


def generate(data: Path, rows: int, files: int, seed: int = 0) -> None:
    """~32 % of rows pass the default rules; ~1 % repeat an earlier row's URL; 0.2 % are ftp://."""
    from lumos.demo import LAION_SCHEMA

    rng = np.random.default_rng(seed)
    shutil.rmtree(data, ignore_errors=True)  # no parts left over from an interrupted run
    data.mkdir(parents=True)
    per = -(-rows // files)
    for k, start in enumerate(range(0, rows, per)):
        n = min(per, rows - start)
        i = np.arange(start, start + n, dtype=np.int64)
        src = i.copy()  # which row's URL this row carries
        dup = rng.random(n) < 0.01
        src[dup] = (rng.random(int(dup.sum())) * i[dup]).astype(np.int64)
        host = src % 50_000  # 50 k distinct IP-literal public hosts: no DNS query, offline-safe
        scheme = np.where(rng.random(n) < 0.002, "ftp://", "http://")
        url = pc.binary_join_element_wise(_str(scheme), "93.184.", _str(host // 250), ".",
                                          _str(host % 250 + 1), "/", _str(src), ".jpg", "")
        text = pc.binary_join_element_wise(_str(WORDS[rng.integers(0, len(WORDS), n)]), _str(i), " #")
        # A bijection of the row index (odd multiplier mod 2^64): unique LAION-style int64 hashes.
        hashes = (i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)).view(np.int64)
        table = pa.Table.from_arrays([
            url, text, pa.array(rng.integers(256, 1537, n)), pa.array(rng.integers(256, 1537, n)),
            pa.array(rng.uniform(0.25, 0.45, n)),
            pa.array((rng.random(n) * 0.55).astype(np.float32)),
            pa.array((rng.random(n) * 0.85).astype(np.float32)),
            pa.array(rng.normal(5.2, 1.0, n).astype(np.float32)), pa.array(hashes),
        ], schema=LAION_SCHEMA)
        pq.write_table(table, data / f"part-{k:03d}.parquet")
    (data / "_rows").write_text(str(rows))


def select_pandas(data: Path, out: Path, cfg) -> int:
    import pandas as pd

    from lumos.curation.select import host_refusal
    from lumos.curation.sources import INTERNAL_COLUMNS

    rules, dl = cfg.select, cfg.download
    df = pd.read_parquet(data).rename(columns={
        "URL": "url", "TEXT": "caption", "WIDTH": "width", "HEIGHT": "height",
        "AESTHETIC_SCORE": "aesthetic"})
    df["uid"] = "bench:" + df["hash"].astype(str)
    df["source"] = "bench"
    url = df["url"]
    ok = url.str.match(r"^(?:https?|file)://", na=False)
    if not dl.allow_file_urls:
        ok &= ~url.str.startswith("file://", na=False)
    hosts = url.str.extract(r"^https?://([^/:?#]+)", expand=False).str.lower()
    distinct = hosts[ok].dropna().unique().tolist()
    with ThreadPoolExecutor(32) as pool:  # the same host check, as many threads as lumos
        refused = {h for h, why in zip(distinct, pool.map(
            lambda h: host_refusal(h, list(dl.allow_hosts)), distinct)) if why}
    ok &= ~hosts.isin(refused)
    ok &= np.minimum(df["width"], df["height"]) > rules.min_side
    ok &= (df["aesthetic"] > rules.aesthetic_min) & (df["punsafe"] <= rules.punsafe_max)
    ok &= df["pwatermark"] <= rules.pwatermark_max
    sel = df[ok].sort_values("uid").drop_duplicates("url", keep="first")
    sel = sel[list(INTERNAL_COLUMNS)].astype({"aesthetic": "float64", "punsafe": "float64",
                                              "pwatermark": "float64"})
    out.mkdir(parents=True, exist_ok=True)
    sel.to_parquet(out / "selected.parquet", index=False)
    return len(sel)


def _status_mib(field: str) -> float:
    """VmHWM (peak RSS) / VmRSS of this process from /proc (Linux). Unlike ru_maxrss, VmHWM
    does not inherit the parent's peak across fork + exec."""
    line = next(s for s in Path("/proc/self/status").read_text().splitlines() if s.startswith(field))
    return int(line.split()[1]) / 1024


def measure(engine: str, data: Path, out: Path) -> dict:
    """Runs in the child process: one engine, timed; peak RSS of this whole process."""
    from lumos.config import Source, load_profile
    from lumos.curation.select import select_source

    if engine == "pandas":
        import pandas  # noqa: F401 - imported before the clock, as duckdb is (by select)
    cfg = load_profile(PARAMS).curation
    base = _status_mib("VmRSS:")
    t0 = time.perf_counter()
    if engine == "duckdb":
        source = Source(name="bench", reader="laion", metadata=str(data / "*.parquet"))
        selected = select_source(cfg, source, out)["selected"]
    else:
        selected = select_pandas(data, out, cfg)
    seconds = time.perf_counter() - t0
    return {"engine": engine, "seconds": seconds, "peak_mib": _status_mib("VmHWM:"),
            "import_mib": base, "selected": selected}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--files", type=int, default=10, help="parquet files to split the rows into")
    ap.add_argument("--workdir", type=Path, help="keep data + outputs here (default: a temp dir)")
    ap.add_argument("--measure", choices=["duckdb", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.data, args.out)))
        return

    with tempfile.TemporaryDirectory(prefix="selbench-") as tmp:
        work = args.workdir or Path(tmp)
        data = work / f"laion-{args.rows}"
        if not (data / "_rows").exists():
            t0 = time.perf_counter()
            generate(data, args.rows, args.files)
            print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.1f} s")
        size = sum(p.stat().st_size for p in data.glob("*.parquet")) / 2**20
        print(f"input: {args.rows:,} rows, {len(list(data.glob('*.parquet')))} files, {size:.0f} MiB")
        res = {}
        for engine in ("pandas", "duckdb"):
            cmd = [sys.executable, __file__, "--measure", engine, "--data", str(data),
                   "--out", str(work / f"out-{engine}")]
            done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
            res[engine] = json.loads(done.stdout.strip().splitlines()[-1])
        import duckdb
        a, b = (work / f"out-{e}" / "selected.parquet" for e in ("duckdb", "pandas"))
        diff = duckdb.sql(f"SELECT count(*) FROM ((SELECT uid FROM '{a}' EXCEPT SELECT uid FROM '{b}') "
                          f"UNION ALL (SELECT uid FROM '{b}' EXCEPT SELECT uid FROM '{a}'))").fetchall()[0][0]

    print(f"\n{'engine':8} {'seconds':>8} {'peak RSS MiB':>13} {'(after imports)':>16} {'selected':>10}")
    for r in res.values():
        print(f"{r['engine']:8} {r['seconds']:8.2f} {r['peak_mib']:13.0f} {r['import_mib']:16.0f} "
              f"{r['selected']:10,}")
    d, p = res["duckdb"], res["pandas"]
    same = d["selected"] == p["selected"] and diff == 0
    speed, mem = p["seconds"] / d["seconds"], d["peak_mib"] / p["peak_mib"]
    print(f"\nsame selection: {'yes' if same else f'NO ({diff} uids differ)'} "
          f"({d['selected'] / args.rows:.1%} of rows)")
    print(f"duckdb is {speed:.1f}x faster (target >= 5x: {'met' if speed >= 5 else 'not met'}), "
          f"uses {mem:.2f}x the memory (target <= 0.33x: {'met' if mem <= 1 / 3 else 'not met'})")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
