"""The NVS training set (supplement G.3, H.3): per rendered object, every view's VAE latent
(composited on white, as Zero-1-to-3), its encoder tokens and its camera.

    datasets/features/nvs/<split>/<uid>.safetensors   latent_mean/std (V,C,h,w), condition (V,M,d),
                                                      w2c (V,4,4); meta: elevations, azimuths

Pairs are every ordered (input view a, target view b), a != b, of one object; the relative pose
x_b = R x_a + T is computed on the fly from the two world-to-camera matrices.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save

from lumos.config import RaySettings
from lumos.data.extract import cached_meta
from lumos.data.stream import Shard, ShardCache, StreamedShards, header_shape, list_shards, load_shard, read_header
from lumos.runtime import storage
from lumos.runtime.device import place, resolve_device
from lumos.runtime.ray import run_shards
from lumos.render.pairs import composite
from lumos.render.renderer import DONE


def load_views(obj_dir: Path | str) -> tuple[torch.Tensor, dict]:
    """(V,3,R,R) float [0,1] views on white, and the object's cameras.json (``obj_dir``: a
    folder or an fsspec URL, params ``storage.renders``)."""
    meta = json.loads(storage.read_bytes(storage.join(obj_dir, "cameras.json")))
    views = [composite(np.asarray(Image.open(io.BytesIO(storage.read_bytes(storage.join(obj_dir, v["image"]))))
                                  .convert("RGBA"))) for v in meta["views"]]
    return torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).contiguous(), meta


@dataclass(frozen=True)
class ObjectJob:
    obj_dir: str  # one rendered object: cameras.json and its views
    target: str  # <uid>.safetensors
    meta: dict


class ObjectFeatureWorker:
    """Encodes rendered objects one at a time (a Ray actor or in-process): one object's views in
    memory, encoded ``batch_size`` at a time; ``build()`` returns (vae, encoder), placed once on
    ``device`` in ``precision``."""

    def __init__(self, build: Callable[[], tuple], batch_size: int, device: str = "cpu",
                 precision: str = "fp32") -> None:
        self.build, self.batch_size = build, batch_size
        self.device, self.precision = resolve_device(device), precision
        self.models: tuple | None = None

    @torch.no_grad()
    def run(self, job: ObjectJob) -> str:
        if cached_meta(job.target) == job.meta:
            return "cached"
        if self.models is None:
            self.models = tuple(place(m, self.device, self.precision) for m in self.build())
        vae, encoder = self.models
        x, cams = load_views(job.obj_dir)
        means, stds, conds = [], [], []
        for i in range(0, len(x), self.batch_size):
            batch = x[i: i + self.batch_size].to(self.device)
            mean, std = vae.encode(batch * 2 - 1)
            means.append(mean.float().cpu())
            stds.append(std.float().cpu())
            conds.append(encoder(batch).float().cpu())
        tensors = {"latent_mean": torch.cat(means), "latent_std": torch.cat(stds),
                   "condition": torch.cat(conds),
                   "w2c": torch.tensor([v["w2c"] for v in cams["views"]], dtype=torch.float32)}
        storage.write_bytes_atomic(job.target, save({k: v.contiguous() for k, v in tensors.items()},
                                                    metadata={"meta": json.dumps(job.meta, sort_keys=True)}))
        return "computed"


def extract_nvs_features(render_dir: Path | str, out_dir: Path | str, build: Callable[[], tuple], batch_size: int,
                         fingerprint: dict, *, device: str = "cpu", precision: str = "fp32",
                         ray: RaySettings | None = None,
                         on_shard: Callable[[int, int, str], None] | None = None) -> dict:
    """One feature file per finished rendered object (fans out per object on Ray when ``ray``)."""
    render_dir, out = storage.normalize(render_dir), storage.normalize(out_dir)  # folders or fsspec URLs
    storage.makedirs(out)
    objects = [done.rsplit("/", 2)[1] for done in storage.glob(render_dir, f"*/{DONE}")]  # finished ones
    jobs = [ObjectJob(storage.join(render_dir, uid), storage.join(out, f"{uid}.safetensors"),
                      {"fingerprint": fingerprint, "uid": uid,
                       "cameras": json.loads(storage.read_bytes(storage.join(render_dir, uid, "cameras.json")))})
            for uid in objects]
    outcomes = run_shards(ObjectFeatureWorker, (build, batch_size, device, precision), jobs, ray,
                          device=device, on_done=on_shard)
    wanted = {j.target for j in jobs}
    for stale in storage.glob(out, "*.safetensors"):
        if stale not in wanted:
            storage.remove(stale)
    return {"computed": outcomes.count("computed"), "cached": outcomes.count("cached"), "objects": len(objects)}


def _meta(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["meta"])


def relative_pose(w2c_a: torch.Tensor, w2c_b: torch.Tensor) -> torch.Tensor:
    """(B,4,4) x 2 -> (B,12): R = R_b R_a^T and T = t_b - R t_a (eq. S1), R row-major then T."""
    ra, ta = w2c_a[:, :3, :3], w2c_a[:, :3, 3]
    rb, tb = w2c_b[:, :3, :3], w2c_b[:, :3, 3]
    r = rb @ ra.transpose(1, 2)
    t = tb - (r @ ta[..., None])[..., 0]
    return torch.cat([r.flatten(1), t], dim=1)


class NVSObjects:
    """Every object's cached views; index k -> (object, input view a, target view b), a != b."""

    def __init__(self, root: Path | str, first: int | None = None) -> None:
        """``first``: read only the first that many objects (sampling draws a few)."""
        files = list_shards(str(root))  # a local folder or an fsspec URL (params storage.features)
        if not files:
            raise FileNotFoundError(f"no NVS features in {root}: run features-nvs first")
        files = files[:first] if first is not None else files
        self.uids, parts, self.meta = [], {}, []
        for file in files:
            tensors, meta = load_shard(file)  # one whole-file read (one request on S3)
            for k in ("latent_mean", "latent_std", "condition", "w2c"):
                parts.setdefault(k, []).append(tensors[k])
            self.meta.append(json.loads(meta["meta"]))
            self.uids.append(file.rsplit("/", 1)[-1].removesuffix(".safetensors"))
        views = {t.shape[0] for t in parts["w2c"]}
        if len(views) != 1:
            raise ValueError(f"{root}: objects have different view counts {sorted(views)}")
        self.views = views.pop()
        self.tensors = {k: torch.stack(v) for k, v in parts.items()}  # (O, V, ...)

    def __len__(self) -> int:
        return len(self.uids) * self.views * (self.views - 1)

    def pair(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        per_object = self.views * (self.views - 1)
        obj, r = k // per_object, k % per_object
        a, b = r // (self.views - 1), r % (self.views - 1)
        return obj, a, b + (b >= a).long()  # skip b == a

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        o, a, b = self.pair(indices)
        t = self.tensors
        return {"latent_mean": t["latent_mean"][o, b], "latent_std": t["latent_std"][o, b],
                "input_latent": t["latent_mean"][o, a], "condition": t["condition"][o, a],
                "pose": relative_pose(t["w2c"][o, a], t["w2c"][o, b])}


class NVSStream(StreamedShards):
    """The NVS pairs streamed (lumos.data.stream): one shard per object, its rows the ordered
    view pairs (a, b), a != b, numbered as in ``NVSObjects``."""

    def __init__(self, root: Path | str) -> None:
        urls = list_shards(str(root))
        if not urls:
            raise FileNotFoundError(f"no NVS features in {root}: run features-nvs first")
        headers = [read_header(u) for u in urls]
        views = {header_shape(h, "w2c")[0] for h in headers}
        if len(views) != 1:
            raise ValueError(f"{root}: objects have different view counts {sorted(views)}")
        self.views = views.pop()
        self.uids = [u.rsplit("/", 1)[-1].removesuffix(".safetensors") for u in urls]
        self.shards = [Shard(u, self.views * (self.views - 1)) for u in urls]
        self.shapes = {k: header_shape(headers[0], k)[1:] for k in ("latent_mean", "condition")}

    def load_rows(self, shard: Shard, rows: list[int], cache: ShardCache) -> dict[str, torch.Tensor]:
        t, _ = cache.get(shard.url, lambda: load_shard(shard.url))
        r = torch.tensor(rows)
        a, b = r // (self.views - 1), r % (self.views - 1)
        b = b + (b >= a).long()  # skip b == a
        return {"latent_mean": t["latent_mean"][b], "latent_std": t["latent_std"][b],
                "input_latent": t["latent_mean"][a], "condition": t["condition"][a],
                "pose": relative_pose(t["w2c"][a], t["w2c"][b])}
