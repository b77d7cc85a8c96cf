"""Download and score at once (params ``curation.score_while_downloading``).

Each shard is scored as soon as img2dataset finishes it, instead of after the whole download.
img2dataset runs in this process's main thread (it installs signal handlers, which only the main
thread may do); a second thread follows the download folder and hands every finished shard (its
``_stats.json`` is written after its tar and parquet are closed) to the score stage's dispatch:
Ray actors (:func:`lumos.runtime.ray.map_shard_stream`), or this process. The score files are
those :func:`lumos.curation.score.score_source` writes (same jobs, same worker, same stamps), so
the ``score`` stage that follows finds every stamp current and scores nothing.

Why in the download stage: DVC runs one stage at a time, so the overlap has to live in one
stage's process. ``curate-download`` and ``curate-score`` stay two stages, each the owner of
its own out; what the download stage writes into ``scores/`` is a per-shard cache that
``curate-score`` (whose out is ``persist: true``, so DVC leaves those files in place) checks
against each shard's stamp (the shard's sha256 and the scorer) and records as its out. A merged
stage would own both outs, but would then download again whenever a score setting changed.

Errors: a failed download is raised as it is, after the shards it finished are scored (they stay
valid: a rerun resumes the download and skips them). A failed score is raised when the download
ends: img2dataset cannot be stopped from another thread, and its finished shards are kept.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lumos.config import Download, RaySettings, ScoreSettings
from lumos.curation.download import download_source
from lumos.curation.score import score_stream


def score_workers(dl: Download, ray: RaySettings | None) -> int | None:
    """Score actors to start beside the download: all slots, except one per img2dataset process
    when img2dataset's own tasks run on the same Ray (``distributor: ray``), which idle score
    actors holding every CPU would starve."""
    if ray is None or dl.distributor != "ray":
        return None
    from lumos.runtime.ray import ensure_ray, worker_slots

    ensure_ray(ray)
    slots = worker_slots(ray)
    if slots < 2:
        raise ValueError("curation.score_while_downloading with download.distributor 'ray' needs a Ray "
                         f"with at least 2 worker slots (ray.cpus_per_task {ray.cpus_per_task}), it has {slots}")
    return max(1, slots - dl.processes)


def download_and_score(selected: Path | str, download_dir: Path | str, scores_dir: Path | str,
                       dl: Download, settings: ScoreSettings, ray: RaySettings | None = None,
                       device: str = "auto", decode_batch: int = 64, poll_s: float = 0.5,
                       on_shard: Callable[[int, int, str], None] | None = None) -> dict:
    """:func:`download_source` with :func:`score_stream` following it; returns both summaries."""
    workers = score_workers(dl, ray)
    if ray is not None:
        from lumos.runtime.ray import ensure_ray

        ensure_ray(ray)  # connect from the main thread; the score thread only dispatches
    ready, finished = threading.Event(), threading.Event()
    expected: list[int] = []
    outcome: dict = {}

    def follow() -> None:
        ready.wait()
        if not expected:  # the download failed before img2dataset started
            return
        try:
            outcome["score"] = score_stream(download_dir, scores_dir, settings, finished, ray=ray,
                                            device=device, expected=expected[0],
                                            on_shard=report if on_shard else None,
                                            decode_batch=decode_batch, poll_s=poll_s, workers=workers)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = err

    def report(done: int, known: int, outcome: str) -> None:
        try:  # progress is reported from the score thread: a reporting fault must not fail the stage
            on_shard(done, known, outcome)
        except Exception as err:  # noqa: BLE001
            logging.getLogger(__name__).warning("shard progress not reported: %r", err)

    def on_ready(shards: int) -> None:
        expected.append(shards)
        ready.set()

    # the caller's context (a Prefect run's logger, for on_shard) goes with the thread
    thread = threading.Thread(target=contextvars.copy_context().run, args=(follow,),
                              name="score-while-downloading", daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        status = download_source(selected, download_dir, dl, ray=ray, on_ready=on_ready)
    except Exception as err:
        finished.set()
        ready.set()
        thread.join()  # the shards img2dataset finished are scored: a rerun resumes after them
        if "error" in outcome:
            err.add_note(f"scoring the finished shards failed too: {outcome['error']!r}")
        raise
    except BaseException:  # Ctrl-C: stop now; every score file is written atomically
        finished.set()
        ready.set()
        raise
    download_s = time.perf_counter() - t0
    finished.set()
    thread.join()
    if "error" in outcome:
        raise RuntimeError(f"scoring {download_dir} while downloading failed (the download finished: "
                           f"{status}): {outcome['error']}") from outcome["error"]
    # what scoring added after the download ended: the last shards' (nothing else waits on it)
    after = time.perf_counter() - t0 - download_s
    seconds = {"download": round(download_s, 3), "score_after_download": round(after, 3)}
    return {"download": status, "score": outcome["score"], "seconds": seconds}
