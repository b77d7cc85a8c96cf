"""Stage `render-objaverse` (supplement G.3): every object at `nvs.views` random cameras facing
its centre, plus the GSO evaluation protocol (16 azimuths x elevations 0 and 30 degrees).

    datasets/renders/objaverse/<uid>/   000.png ... (RGBA) + cameras.json (4x4 world-to-camera)
    datasets/renders/gso/<uid>/         the fixed evaluation cameras
    datasets/renders/views.parquet      one row per rendered view (the catalog's `views`)
    datasets/renders/rejects.parquet    objects that could not be rendered, with the reason
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lumos.config import NVS, Profile
from lumos.io import join_location, local_file, read_bytes
from lumos.render.cameras import fixed_cameras, sample_cameras
from lumos.render.renderer import DONE, get_renderer, render_object
from lumos.runtime import storage
from lumos.runtime.ray import run_shards

RENDERS = Path("datasets/renders")  # the default of params storage.renders


def renders_location(profile: Profile) -> str:
    """The renders' root (params ``storage.renders``): a folder or a bucket URL."""
    return profile.storage.renders.rstrip("/")


def read_object_list(path: Path | str) -> dict[str, Path | str]:
    """Objaverse's annotation: {uid: path}, paths relative to the file's folder (or absolute, or
    URLs); the list itself may be a local path or an fsspec URL (s3://, gs://, ...)."""
    return {uid: join_location(path, rel) for uid, rel in json.loads(read_bytes(path)).items()}


def renderer_for(nvs: NVS):
    """The renderer ``nvs.renderer`` names, with its settings from params."""
    return get_renderer(nvs.renderer, **({"samples": nvs.cycles_samples} if nvs.renderer == "cycles" else {}))


def _seed(uid: str, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{uid}".encode(), digest_size=4).digest(), "little")


class RenderWorker:
    """Renders objects one at a time (a Ray actor or in-process): the object's random cameras and
    the GSO protocol; the renderer is built once per worker. A broken object is skipped with its
    reason, never stopping the run; a finished object is skipped by ``render_object``."""

    def __init__(self, nvs: NVS, seed: int, out: str) -> None:
        self.nvs, self.seed, self.out = nvs, seed, out  # a folder or an fsspec URL
        self.gso = fixed_cameras(nvs.eval_azimuths, nvs.eval_elevations_deg, nvs.eval_radius)
        self.renderer = None

    def run(self, job: tuple[str, str]) -> tuple[str, str | None]:
        uid, location = job
        nvs = self.nvs
        if self.renderer is None:
            self.renderer = renderer_for(nvs)
        try:
            mesh = local_file(location)  # remote meshes are fetched once into a local cache
        except FileNotFoundError:
            return uid, f"missing file {location}"
        cams = sample_cameras(nvs.views, nvs.radius, nvs.elevation_deg, seed=_seed(uid, self.seed))
        try:
            for split, split_cams in (("objaverse", cams), ("gso", self.gso)):
                with _object_folder(self.out, split, uid) as folder:
                    render_object(mesh, folder, split_cams, nvs.resolution, self.renderer, nvs.fov_deg, uid=uid)
        except (ValueError, KeyError, IndexError, OSError, TypeError) as err:  # trimesh's ways to fail a load
            return uid, f"unreadable mesh: {type(err).__name__}: {str(err)[:200]}"
        return uid, None


@contextmanager
def _object_folder(out: str, split: str, uid: str) -> Iterator[Path]:
    """Where render_object writes ``<uid>/``: ``out/split`` itself when local (render_object
    skips a finished object); for a bucket, a local temporary folder whose object is uploaded
    file by file, ``_DONE`` last, and skipped when the bucket already has its ``_DONE``."""
    if "://" not in out:
        yield Path(out) / split
        return
    remote = storage.join(out, split, uid)
    with tempfile.TemporaryDirectory(prefix="lumos-render-") as tmp:
        if storage.exists(storage.join(remote, DONE)):
            (Path(tmp) / uid).mkdir()
            (Path(tmp) / uid / DONE).write_text("")  # render_object sees it finished
            yield Path(tmp)
            return
        yield Path(tmp)
        local = Path(tmp) / uid
        fs, root = storage.fs_and_path(remote)
        for file in sorted(local.iterdir(), key=lambda f: f.name == DONE):  # the marker last
            fs.put_file(str(file), f"{root}/{file.name}")


def _write_parquet(location: str, table: pa.Table) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes_atomic(location, buf.getvalue().to_pybytes())


def run_render(profile: Profile, out: Path | str | None = None, on_shard=None) -> dict:
    """Every object on Ray (params ``ray``), one object per task; finished ones are skipped.
    ``out``: default params ``storage.renders`` (a folder or a bucket URL)."""
    nvs = profile.nvs
    out = str(out or renders_location(profile)).rstrip("/")  # as given: views.parquet names images by it
    objects = read_object_list(nvs.objects)
    jobs = [(uid, str(objects[uid])) for uid in sorted(objects)]
    results = run_shards(RenderWorker, (nvs, profile.train.seed, storage.normalize(out)), jobs, profile.ray,
                         device="cpu", on_done=on_shard)
    verdicts = dict(sorted(results))
    rejects = [{"uid": u, "path": str(objects[u]), "reason": why} for u, why in verdicts.items() if why]
    rendered = sorted(u for u, why in verdicts.items() if why is None)
    _write_parquet(storage.join(out, "rejects.parquet"), pa.Table.from_pylist(rejects, schema=pa.schema(
        [("uid", pa.string()), ("path", pa.string()), ("reason", pa.string())])))
    rows = []
    for split in ("objaverse", "gso"):
        for uid in rendered:
            meta = json.loads(storage.read_bytes(storage.join(out, split, uid, "cameras.json")))
            for i, cam in enumerate(meta["views"]):
                rows.append({"split": split, "uid": uid, "view": i,
                             "image": storage.join(out, split, uid, f"{i:03d}.png"),
                             "elevation_deg": cam["elevation_deg"], "azimuth_deg": cam["azimuth_deg"],
                             "radius": cam["radius"], "w2c": json.dumps(cam["w2c"])})
    _write_parquet(storage.join(out, "views.parquet"), pa.Table.from_pylist(rows))
    return {"objects": len(objects), "rendered": len(rendered), "rejected": len(rejects),
            "views": len(rows)}
