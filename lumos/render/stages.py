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
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lumos.config import NVS, Profile
from lumos.io import join_location, local_file, read_bytes
from lumos.render.cameras import fixed_cameras, sample_cameras
from lumos.render.renderer import get_renderer, render_object
from lumos.runtime.ray import run_shards

RENDERS = Path("datasets/renders")


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
        self.nvs, self.seed, self.out = nvs, seed, Path(out)
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
            render_object(mesh, self.out / "objaverse", cams, nvs.resolution, self.renderer, nvs.fov_deg, uid=uid)
            render_object(mesh, self.out / "gso", self.gso, nvs.resolution, self.renderer, nvs.fov_deg, uid=uid)
        except (ValueError, KeyError, IndexError, OSError, TypeError) as err:  # trimesh's ways to fail a load
            return uid, f"unreadable mesh: {type(err).__name__}: {str(err)[:200]}"
        return uid, None


def run_render(profile: Profile, out: Path = RENDERS, on_shard=None) -> dict:
    """Every object on Ray (params ``ray``), one object per task; finished ones are skipped."""
    nvs = profile.nvs
    objects = read_object_list(nvs.objects)
    jobs = [(uid, str(objects[uid])) for uid in sorted(objects)]
    results = run_shards(RenderWorker, (nvs, profile.train.seed, str(Path(out).resolve())), jobs, profile.ray,
                         device="cpu", on_done=on_shard)
    verdicts = dict(sorted(results))
    rejects = [{"uid": u, "path": str(objects[u]), "reason": why} for u, why in verdicts.items() if why]
    rendered = sorted(u for u, why in verdicts.items() if why is None)
    pq.write_table(pa.Table.from_pylist(rejects, schema=pa.schema(
        [("uid", pa.string()), ("path", pa.string()), ("reason", pa.string())])), out / ".rejects.tmp")
    (out / ".rejects.tmp").replace(out / "rejects.parquet")
    rows = []
    for split in ("objaverse", "gso"):
        for uid in rendered:
            meta = json.loads((out / split / uid / "cameras.json").read_text())
            for i, cam in enumerate(meta["views"]):
                rows.append({"split": split, "uid": uid, "view": i, "image": str(out / split / uid / f"{i:03d}.png"),
                             "elevation_deg": cam["elevation_deg"], "azimuth_deg": cam["azimuth_deg"],
                             "radius": cam["radius"], "w2c": json.dumps(cam["w2c"])})
    tmp = out / ".views.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(out / "views.parquet")
    return {"objects": len(objects), "rendered": len(rendered), "rejected": len(rejects),
            "views": len(rows)}
