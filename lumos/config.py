"""Typed, frozen parameters loaded from ``params.yaml``.

``params.yaml`` holds one block per profile (``tiny``: CPU minutes, ``paper``: the paper's
values) and one key, ``profile``, that picks the active one. Each profile has one section per
stage. Everything is validated before any work starts: an unknown key, a value of the wrong
type or an impossible value raises :class:`ConfigError` naming the file and the key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PARAMS = Path("params.yaml")

Prob = Annotated[float, Field(ge=0.0, le=1.0)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0.0)]
Precision = Literal["fp32", "fp16", "bf16"]


class ConfigError(ValueError):
    """A params file that cannot be used: names the file and every offending key path."""


class Section(BaseModel):
    """Base of every params section: frozen, strict types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --------------------------------------------------------------------------- mini-world
class BadRows(Section):
    """How many deliberately broken rows the mini-world's metadata carries, per kind."""

    missing: NonNegInt = 8  # URL answers 404
    truncated: NonNegInt = 6  # image bytes cut short
    not_image: NonNegInt = 4  # text served as image/jpeg
    wrong_size: NonNegInt = 6  # WIDTH/HEIGHT in the metadata lie
    duplicate: NonNegInt = 6  # the same bytes under a second URL
    huge: NonNegInt = 2  # a valid PNG of huge_side^2 pixels (a decompression bomb for max_pixels)
    huge_side: Annotated[int, Field(ge=16)] = 2400

    @property
    def total(self) -> int:
        return (self.missing + self.truncated + self.not_image + self.wrong_size + self.duplicate
                + self.huge)


class MixtureSources(Section):
    """The mini-world's extra sources (part `sources`, demo/mixture.py), for G.1's mixture."""

    imagenet: NonNegInt = 24  # small images (short side <= 512) in an ImageNet-style folder
    coyo: NonNegInt = 24  # COYO-700M-schema rows of their own scenes ...
    coyo_near_duplicates: NonNegInt = 8  # ... plus re-encoded, resized copies of LAION images


class MiniWorld(Section):
    """The embedded procedural world used by the tiny profile and the tests (DESIGN 4)."""

    seed: int = 0
    n_images: Annotated[int, Field(ge=1)] = 480
    min_side: Annotated[int, Field(ge=16)] = 200
    max_side: Annotated[int, Field(ge=16)] = 900
    png_fraction: Prob = 0.3
    max_shapes: Annotated[int, Field(ge=1, le=8)] = 4
    base_url: Annotated[str, Field(pattern=r"^https?://[^/\s]+$")] = "http://127.0.0.1:8765"
    bad_rows: BadRows = BadRows()
    parts: list[Literal["images", "clips", "meshes", "heldout", "sources"]] = ["images", "clips", "meshes", "heldout"]
    clips: Annotated[int, Field(ge=6)] = 24  # short procedural videos (5 of them bad on purpose)
    meshes: PosInt = 12  # procedural coloured 3D objects (GLB)
    heldout: Annotated[int, Field(ge=2)] = 12  # items per held-out benchmark stand-in (demo/heldout.py)
    mixture: MixtureSources = MixtureSources()  # the `sources` part: ImageNet- and COYO-style

    @model_validator(mode="after")
    def _sides_ordered(self) -> MiniWorld:
        if self.max_side < self.min_side:
            raise ValueError(f"max_side ({self.max_side}) must be >= min_side ({self.min_side})")
        if self.bad_rows.total > self.n_images:
            raise ValueError(
                f"bad_rows add up to {self.bad_rows.total}, more than n_images ({self.n_images})"
            )
        return self


# --------------------------------------------------------------------------- data curation
class Source(Section):
    """One metadata source of the I2I mixture (supplement G.1)."""

    name: str
    reader: Literal["laion", "coyo", "sam", "journeydb", "imagenet", "folder"]
    metadata: str  # local path, glob or fsspec URL of the metadata parquet(s)
    quota: PosInt | None = None  # images in the final mixture, a seeded sample of the kept ones
    # This source's own thresholds; keys left out take the profile's `select` / `keep` values.
    select: SelectRules | None = None
    keep: KeepRules | None = None
    # The mini-world: serve datasets/mini-world at mini_world.base_url while downloading.
    serve_mini_world: bool = False


class Download(Section):
    """img2dataset settings (its own names, shortened); see img2dataset.download."""

    processes: PosInt = 2
    threads: PosInt = 32
    timeout_s: PosInt = 10
    retries: NonNegInt = 1
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "no"
    image_size: PosInt = 1024
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    # Keep the server's bytes untouched so that the score stage decodes each image once and
    # sees truncation (a re-encode by OpenCV would silently "repair" a truncated JPEG).
    disable_all_reencoding: bool = True
    samples_per_shard: PosInt = 10000
    incremental_mode: Literal["incremental", "extend"] = "incremental"  # "overwrite" hangs (DESIGN 6)
    distributor: Literal["multiprocessing", "pyspark", "ray"] = "multiprocessing"
    allow_hosts: list[str] = []  # loopback/private hosts allowed anyway (the mini-world's 127.0.0.1)
    allow_file_urls: bool = False

    @field_validator("resize_mode", mode="before")
    @classmethod
    def _yaml11_no(cls, value: object) -> object:
        """`dvc exp run -S` rewrites params.yaml and drops the quotes of "no", which YAML 1.1
        then reads as false: take that false back as img2dataset's "no"."""
        return "no" if value is False else value


class Aesthetic(Section):
    """LAION's aesthetic predictor: an MLP on CLIP ViT-L/14 image embeddings (open_clip)."""

    clip_model: str = "ViT-L-14"
    clip_pretrained: str | None = "openai"  # open_clip tag or checkpoint path; None: random
    mlp_weights: str | None = None  # path to LAION's MLP (.pth); None: randomly initialised
    batch_size: PosInt = 32


class SelectRules(Section):
    """Metadata pre-filter (before any download), on the values the source declares."""

    min_side: NonNegInt | None = 512  # G.1: resolution > 512 (short side); None: no rule
    aesthetic_min: float | None = 5.0  # G.1: aesthetic > 5.0 (rows without a score pass to `keep`)
    punsafe_max: Prob = 0.5
    pwatermark_max: Prob = 0.8


class ScoreSettings(Section):
    """What `score` computes once per shard (cached): decode, true size, pHash, aesthetic."""

    max_pixels: PosInt = 89_478_485  # larger images are rejected as decompression bombs
    aesthetic: Aesthetic = Aesthetic()


class KeepRules(Section):
    """Thresholds on the cached scores; changing them reruns `keep` alone."""

    min_side: NonNegInt | None = 512  # G.1: true resolution > 512 (short side); None: no rule
    aesthetic_min: float | None = 5.0  # G.1: aesthetic > 5.0; None: no rule
    # Which aesthetic the rule reads: the predictor's, or the score the metadata declared.
    aesthetic_from: Literal["predicted", "metadata"] = "predicted"


class Dedup(Section):
    """Near-duplicate removal across every source's kept images (after `keep`, before quotas)."""

    hamming_max: Annotated[int, Field(ge=0, le=63)] = 4  # pHash distance (of 64 bits)
    # Which copy survives: compared key by key, then by uid.
    survivor: Annotated[list[Literal["resolution", "aesthetic", "source_order"]], Field(min_length=1)] = [
        "resolution", "aesthetic", "source_order"]


def _override(base: Section, own: Section | None) -> Section:
    if own is None:
        return base
    return base.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})


class Curation(Section):
    """I2I image curation (supplement G.1): sources -> select -> download -> score -> keep."""

    sources: Annotated[list[Source], Field(min_length=1)]
    seed: int = 0  # for per-source quota samples
    select: SelectRules = SelectRules()
    download: Download = Download()
    score: ScoreSettings = ScoreSettings()
    keep: KeepRules = KeepRules()
    dedup: Dedup = Dedup()
    # select takes quota x this many rows, so that the quota survives download, decode and keep
    quota_overfetch: Annotated[float, Field(ge=1.0)] = 1.5
    # download also scores each shard as img2dataset finishes it (lumos/curation/fetch.py); the
    # score stage then finds every shard's scores current
    score_while_downloading: bool = False

    def select_rules(self, source: Source) -> SelectRules:
        """The profile's select rules with the source's own keys on top."""
        return _override(self.select, source.select)

    def keep_rules(self, source: Source) -> KeepRules:
        """The profile's keep rules with the source's own keys on top."""
        return _override(self.keep, source.keep)

    @model_validator(mode="after")
    def _unique_sources(self) -> Curation:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return self


class SubsetRule(Section):
    """One source's T2I-subset thresholds; ``None`` turns a rule off (the source passes whole)."""

    min_side: PosInt | None = 512
    aesthetic_min: float | None = 5.5


class T2IData(Section):
    """The text-image subset (supplement G.2): LAION and COYO at resolution > 512 and aesthetic
    > 5.5; SAM, JourneyDB and ImageNet-1K taken whole (``sources``); per-source quotas."""

    min_side: PosInt | None = 512    # the default rule, for sources not named in ``sources``
    aesthetic_min: float | None = 5.5
    sources: dict[str, SubsetRule] = {}  # source name -> its own rule
    quotas: dict[str, PosInt] = {}  # source name -> rows at most (a seeded sample); absent: all
    seed: int = 0
    long_caption_ratio: Prob = 0.95  # DALL-E 3: long captions mixed with the raw ones
    caption_noise: Prob = 0.0  # Fig. 2a / S1: this share of captions replaced by other images' (seed)

    def rule(self, source: str) -> SubsetRule:
        return self.sources.get(source, SubsetRule(min_side=self.min_side, aesthetic_min=self.aesthetic_min))


class Captioner(Section):
    """InternVL long captions (supplement G.2), generated once and cached per shard."""

    model: str | None = "OpenGVLab/InternVL3-8B-hf"  # hub name or path; None: tiny random InternVL
    prompt: str = "Describe this image in detail."
    max_new_tokens: PosInt = 256
    batch_size: PosInt = 8
    do_sample: bool = False
    num_beams: PosInt = 1
    precision: Precision = "bf16"
    crop_to_patches: bool = False  # one tile per image (InternVL's processor tiles by default)
    seed: int = 0  # for sampled captions


# --------------------------------------------------------------------------- encoders
class VAE(Section):
    pretrained: str | None = "stabilityai/sd-vae-ft-ema"  # None: tiny random AutoencoderKL
    scaling_factor: PosFloat | None = 0.18215  # None: the VAE's own config.scaling_factor


class VAETrain(Section):
    """Stage `train-vae` (tiny profile only; the paper keeps SD's VAE): a small AutoencoderKL
    trained on the mini-world's images, saved in diffusers format at ``out``."""

    images: str = "datasets/mini-world/images"  # a folder of images (jpg/png)
    out: str = "models/vae"
    resolution: PosInt = 64  # the images' side (the features' resolution)
    crop: Annotated[int, Field(ge=8)] | None = 32  # train on random crops of this side; None: whole
    steps: PosInt = 400
    batch_size: PosInt = 16
    lr: PosFloat = 2e-3
    kl_weight: Annotated[float, Field(ge=0.0)] = 1e-6  # SD's KL weight: latents stay near-deterministic
    held_out: NonNegInt = 32  # images kept out of training to measure reconstruction PSNR
    seed: int = 0
    # the autoencoder's shape: one entry per level (len - 1 halvings: 4 entries = SD's 8x)
    block_out_channels: list[PosInt] = Field(default_factory=lambda: [16, 32, 32, 32], min_length=2)
    latent_channels: PosInt = 4  # SD: 4; more channels keep more detail at the same 8x

    @field_validator("block_out_channels")
    @classmethod
    def _group_norm_fits(cls, v: list[int]) -> list[int]:
        if any(c % 16 for c in v):  # the autoencoder's GroupNorm has 16 groups
            raise ValueError(f"every block_out_channels entry must be a multiple of 16, got {v}")
        return v


class VisionEncoder(Section):
    """The frozen image encoder tau_img of eq. (1) and its condition tokens (paper 4.3)."""

    name: Literal["dino", "dinov2", "mocov3", "clip"] = "dino"
    pretrained: str | None = "facebook/dino-vitb16"  # None: tiny random config
    tokens: Literal["cls", "patch", "all", "topk", "random"] = "cls"
    topk: PosInt = 119  # CLS + 119 patches = 120, T5's length (also the count of `random`)
    patch_seed: int = 0  # tokens: random (F.2's control): CLS + topk patches drawn per image
    resolution: PosInt = 224
    normalize_cls: bool = True  # DINO's [CLS] L2-normalised, as the released Lumos code


class TextEncoder(Section):
    """T5 for T2I (supplement H.2): Flan-T5-XXL, 120 tokens; or CLIP's text tower (Fig. 11)."""

    name: Literal["t5", "clip"] = "t5"  # clip: open_clip, pretrained "ARCH:TAG" (None: tiny)
    pretrained: str | None = "google/flan-t5-xxl"  # None: tiny random T5
    max_length: PosInt = 120
    precision: Precision = "bf16"


# --------------------------------------------------------------------------- model + diffusion
class Model(Section):
    variant: Literal["tiny", "B/2", "L/2", "XL/2"] = "XL/2"
    condition_dropout: Prob = 0.1  # Fig. 12 (a)
    backbone: Literal["lumos", "pixart"] = "lumos"  # lumos: the released per-block adaLN-Zero DiT
    learn_sigma: bool = True  # [epsilon | variance] output, IDDPM's hybrid loss (as DiT / PixArt)
    vlb_weight: Annotated[float, Field(ge=0.0)] = 1.0  # lambda of L_simple + lambda L_vlb (DiT's code)
    # `prior: pixart-alpha`: a hub name or diffusers folder; None: a tiny random stand-in
    pixart_alpha: str | None = "PixArt-alpha/PixArt-XL-2-512x512"


class Diffusion(Section):
    train_steps: PosInt = 1000  # DDPM schedule, epsilon prediction, eq. (1)
    sampler: Literal["dpm-solver++", "ddim", "ddpm"] = "dpm-solver++"
    sample_steps: PosInt = 20
    cfg_scale: Annotated[float, Field(ge=1.0)] = 4.5


# --------------------------------------------------------------------------- training
class Optimizer(Section):
    """AdamW, constant lr after a linear warm-up (supplement H.1)."""

    lr: PosFloat = 1.6e-4
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.03
    warmup_steps: NonNegInt = 1000
    grad_clip: PosFloat = 1.0


class Train(Section):
    """The I2I prior's run (supplement H.1)."""

    resolution: PosInt = 256
    steps: PosInt = 400_000
    global_batch: PosInt = 16384
    micro_batch: PosInt = 256
    optimizer: Optimizer = Optimizer()
    precision: Precision = "fp16"
    zero_stage: Annotated[int, Field(ge=0, le=3)] = 2
    gradient_checkpointing: bool = True
    ema_decay: Prob = 0.9999
    seed: int = 0
    checkpoint_every: PosInt = 5000
    log_every: PosInt = 100
    max_samples: PosInt | None = None  # I2I data scale (Fig. 2b): a seeded random N of the samples
    subset_seed: int = 0  # which N (max_samples); the training order stays `seed`'s
    # Fig. 8: what the prior is pre-trained on: the image's encoder tokens (Lumos-I2I), its class
    # (the ImageNet folder of its URL, one-hot: a learned label embedding) or nothing
    condition: Literal["image", "class", "none"] = "image"
    sources: Annotated[list[str], Field(min_length=1)] | None = None  # only these catalog sources
    keep_last: PosInt | None = 3  # finished checkpoints kept on disk (older ones deleted); null: all
    loader_workers: Annotated[int, Field(ge=0)] = 2  # streamed-input DataLoader workers per rank

    @model_validator(mode="after")
    def _batch_divides(self) -> Train:
        if self.global_batch % self.micro_batch:
            raise ValueError(
                f"global_batch ({self.global_batch}) must be a multiple of "
                f"micro_batch ({self.micro_batch})"
            )
        return self


class Launch(Section):
    """How training stages start: in the flow's own process, or through DeepSpeed's launcher
    (``deepspeed [--hostfile F] [--num_nodes N] [--num_gpus G] ... --module lumos.cli STAGE``).

    See lumos/train/launch.py and docs/scale-out.md. Rank 0 writes checkpoints and summaries.
    """

    mode: Literal["inprocess", "deepspeed"] = "inprocess"
    hostfile: str | None = None  # MPI-style lines "host slots=N"; None: this machine only
    num_nodes: PosInt | None = None  # the first N hosts of the hostfile; None: all of them
    num_gpus: PosInt | None = None  # processes per node; None: every device (CPU: one per NUMA node)
    include: str | None = None  # deepspeed --include, e.g. "worker-0@worker-1:0,2"
    exclude: str | None = None  # deepspeed --exclude, e.g. "worker-1:0"
    master_addr: str | None = None  # None: 127.0.0.1 alone, else the first host's `hostname -I`
    master_port: Annotated[int, Field(ge=1, le=65535)] | None = None  # None: a free port at launch
    launcher: Literal["pdsh", "openmpi", "mvapich", "mpich", "slurm", "impi"] = "pdsh"  # multi-node
    launcher_args: str = ""  # passed to the multi-node launcher as one string
    env: dict[str, str] = {}  # extra environment of every rank (exported to remote nodes too)

    @model_validator(mode="after")
    def _consistent(self) -> Launch:
        if self.include and self.exclude:
            raise ValueError("include and exclude are mutually exclusive")
        if (self.include or self.exclude) and (self.num_nodes or self.num_gpus):
            raise ValueError("num_nodes/num_gpus cannot be combined with include/exclude")
        if (self.num_nodes or 1) > 1 and self.hostfile is None:
            raise ValueError(f"num_nodes is {self.num_nodes} but no hostfile names the nodes")
        return self


class Features(Section):
    """The `features` cache: VAE latents and condition tokens, computed once per shard."""

    batch_size: PosInt = 64
    precision: Precision = "fp32"


class Sample(Section):
    """I2I sampling: variations of input images and interpolations (supplement I.4)."""

    images: PosInt = 4  # input images taken from the catalog
    variations: PosInt = 4  # samples per input image
    interpolation_steps: Annotated[int, Field(ge=2)] = 8
    seed: int = 0


class T2IStage(Section):
    """One row of Table S1."""

    resolution: PosInt
    multi_aspect: bool = False
    steps: PosInt
    global_batch: PosInt
    lr: PosFloat
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.03
    warmup_steps: NonNegInt = 1000


# A checkpoint or run folder (e.g. an imported release, `lumos import-checkpoint`): has a "/".
PriorPath = Annotated[str, Field(pattern=r"/")]
# Fig. 5, Tables 4-5: which checkpoint a task starts from (pixart-alpha: model.pixart_alpha)
Prior = Literal["i2i", "t2i", "pixart-alpha", "none"] | PriorPath


class T2ISample(Section):
    """Prompts -> images with CFG, at each listed aspect ratio (height / width, a bucket's)."""

    prompts: PosInt = 8  # mini-world captions taken from the T2I subset, in order
    aspect_ratios: Annotated[list[PosFloat], Field(min_length=1)] = [1.0, 0.5625]
    seed: int = 0


class T2I(Section):
    """Progressive T2I fine-tuning (supplement H.2, Table S1)."""

    prior: Literal["i2i", "none"] | PriorPath = "i2i"  # a T2I prior for T2I would be the task itself
    pair_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0  # Fig. 5: the first share of pairs
    stages: Annotated[list[T2IStage], Field(min_length=1)]
    micro_batch: PosInt = 64
    precision: Precision = "fp16"
    zero_stage: Annotated[int, Field(ge=0, le=3)] = 2
    checkpoint_every: PosInt = 5000
    sample: T2ISample = T2ISample()

    @model_validator(mode="after")
    def _progressive(self) -> T2I:
        res = [s.resolution for s in self.stages]
        if res != sorted(res):
            raise ValueError(f"stage resolutions must not decrease, got {res}")
        return self


class FineTune(Section):
    """One downstream fine-tuning run from a prior (supplement H.3, H.4)."""

    prior: Prior = "i2i"
    steps: PosInt
    global_batch: PosInt
    micro_batch: PosInt
    optimizer: Optimizer = Optimizer()
    precision: Precision = "fp16"
    zero_stage: Annotated[int, Field(ge=0, le=3)] = 2
    gradient_checkpointing: bool = True
    ema_decay: Prob = 0.9999
    checkpoint_every: PosInt = 5000
    log_every: PosInt = 100


class NVS(Section):
    """Novel view synthesis data and protocol (supplement G.3, paper 4.2.2)."""

    objects: str = "datasets/mini-world/objects.json"  # Objaverse's uid -> path annotation
    renderer: Literal["raycast", "cycles"] = "raycast"  # cycles: Blender via bpy
    cycles_samples: PosInt = 32  # path-tracing samples per pixel (renderer: cycles only)
    fov_deg: Annotated[float, Field(gt=0.0, lt=180.0)] = 49.1  # Zero-1-to-3's camera
    eval_radius: PosFloat = 1.5
    views: Annotated[int, Field(ge=2)] = 32
    resolution: PosInt = 256
    radius: Annotated[list[PosFloat], Field(min_length=2, max_length=2)] = [1.5, 2.2]
    elevation_deg: Annotated[list[float], Field(min_length=2, max_length=2)] = [-10.0, 40.0]
    eval_azimuths: PosInt = 16
    eval_elevations_deg: list[float] = [0.0, 30.0]
    train: FineTune  # H.3
    sample_objects: PosInt = 2  # GSO-protocol objects turned into strips by sample-nvs


class VideoSource(Section):
    """Where I2V clips come from: a WebVid-format CSV (path or URL) and how to fetch them."""

    csv: str = "datasets/mini-world/webvid.csv"
    serve_mini_world: bool = False  # serve datasets/mini-world at mini_world.base_url meanwhile
    allowed_url_prefixes: list[str] | None = None  # None: any http(s) URL
    samples_per_shard: PosInt = 1000
    workers: PosInt = 8
    timeout_s: PosFloat = 20.0
    retries: NonNegInt = 2
    random_start: bool = False  # a seeded start frame instead of frame 0


class I2V(Section):
    """Image-to-video data and run (supplement G.4, H.4)."""

    frames: Annotated[int, Field(ge=2)] = 16
    frame_interval: PosInt = 3
    resolution: PosInt = 256
    source: VideoSource = VideoSource()
    train: FineTune  # H.4
    sample_clips: PosInt = 2  # evaluation clips turned into videos by sample-i2v
    # 1: later frames start from pure noise (H.4); < 1: from frame 0's latent noised to that
    # share of the sampler's schedule (SDEdit-style, beyond the paper), in sample-i2v and evaluate-i2v
    sample_strength: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0


# --------------------------------------------------------------------------- evaluation
class ImageProtocol(Section):
    """One FID protocol: which reference images, how many samples, at what resolution."""

    reference: str  # folder, glob or parquet of the reference images
    prompts: str | None = None  # captions the T2I samples are drawn from (COCO-30K); None: I2I
    samples: PosInt = 30_000  # generated images (and reference images) compared
    resolution: PosInt = 256  # both sets are resized to this square before the extractor


class VideoProtocol(Section):
    """One I2V protocol of Table 5: reference clips, how many, frames and resolution."""

    reference: str  # folder or WebVid-format CSV of the reference clips
    samples: PosInt = 2048
    frames: Annotated[int, Field(ge=2)] = 16
    frame_interval: PosInt = 3
    resolution: PosInt = 256


class ObjectProtocol(Section):
    """Table 4's NVS protocol: held-out 3D objects (Google Scanned Objects' per-object folders,
    ``<name>/meshes/model.obj`` + texture) rendered at the GSO cameras, and how many are read."""

    reference: str  # folder of per-object folders
    samples: PosInt = 30  # objects evaluated (first by name)


class Alignment(Section):
    """Strict mini-world alignment (lumos/eval/alignment.py): the objects found per 3x3 grid cell
    must be exactly the shapes the caption names (count, colour, position, shape)."""

    tolerance: PosFloat = 60.0  # RGB distance within which a pixel has a palette colour
    min_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.03  # of a cell's short side squared: an object
    cell_px: Annotated[int, Field(ge=4)] = 32  # analysis pixels per cell side


class Eval(Section):
    """Metrics (lumos/eval): FID/KID (Tables 1-2), CLIP score (Fig. 2a), PSNR/SSIM/LPIPS
    (Table 4), FVD/KVD/PIC (Table 5) and the mini-world alignment score."""

    inception_weights: str | None = None  # torch-fidelity's InceptionV3 file; None: tiny ResNet
    i3d_weights: str | None = None  # the FVD I3D TorchScript file; None: tiny VideoResNet
    feature_dim: PosInt = 64  # the tiny extractors' feature width
    feature_resolution: PosInt = 64  # the tiny extractors' input side
    seed: int = 0  # the tiny extractors' (and random backbones') weights
    batch_size: PosInt = 64
    kid_subsets: PosInt = 100
    kid_subset_size: Annotated[int, Field(ge=2)] = 1000
    clip_model: str | None = "ViT-L-14:openai"  # open_clip "ARCH:TAG|PATH"; None: lumos-tiny-clip
    lpips_net: Literal["alex", "vgg", "squeeze"] = "vgg"
    lpips_backbone: str | None = None  # torchvision ImageNet weights file; None: random backbone
    images: dict[str, ImageProtocol] = {}  # e.g. coco30k (T2I), imagenet (I2I)
    videos: dict[str, VideoProtocol] = {}  # e.g. ucf101, msrvtt
    objects: dict[str, ObjectProtocol] = {}  # e.g. gso (NVS, Table 4)
    alignment: Alignment = Alignment()
    every: PosInt | None = None  # held-out metric every N saved checkpoints during training; None: off


# --------------------------------------------------------------------------- ablations
class DataScale(Section):
    """Fig. 2b: I2I prior trained on seeded random subsets of these sizes (train.max_samples)."""

    sizes: Annotated[list[PosInt], Field(min_length=1)] = [10_000_000, 50_000_000, 100_000_000, 190_000_000]


class Ablate(Section):
    """Values of the `lumos ablate` grids that depend on the scale (lumos/experiments.py)."""

    data_scale: DataScale = DataScale()
    caption_noise: Annotated[list[Prob], Field(min_length=1)] = [0.1, 0.3, 0.5, 0.7, 0.9]  # Fig. 2a, S1
    prior_sources: Annotated[list[str], Field(min_length=1)] = ["imagenet"]  # Fig. 8: all on ImageNet-1K


# --------------------------------------------------------------------------- scale-out
Device = Literal["auto", "cpu", "cuda"]


class RaySettings(Section):
    """Where per-shard stages run (lumos/runtime/ray.py, docs/scale-out.md).

    ``address: null`` joins the local Ray that ``lumos server start`` started for the run (its
    address file or RAY_ADDRESS), else starts one in this process with this machine's CPUs and
    GPUs; ``auto`` or ``ray://head:10001`` joins an existing cluster: a cluster is a params change.
    """

    address: str | None = None
    num_cpus: PosInt | None = None  # a Ray started here: CPUs it may use (None: all)
    num_gpus: NonNegInt | None = None  # a Ray started here: GPUs it may use (None: all)
    cpus_per_task: PosFloat = 1.0  # CPUs one shard task reserves (decode + CPU models)
    gpus_per_task: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0  # per model task when GPUs exist
    max_retries: NonNegInt = 3  # a shard task whose worker dies is run again (faults only)
    decode_batch: PosInt = 64  # images decoded at once in a worker: memory ~ batch x workers
    # a stage of at most this many shards (caption, t5, t2i/nvs/i2v features, webvid, render) runs
    # them in its own process: Ray actors cost ~30 s of start-up a stage on 2 busy cores; 0: always Ray
    in_process_max_shards: NonNegInt = 0
    # sample-*/evaluate-* of at most this many generation units (lumos/runtime/units.py) generate
    # in their own process; 0: always Ray
    in_process_max_units: NonNegInt = 0

    @field_validator("address")
    @classmethod
    def _known_address(cls, value: str | None) -> str | None:
        if value is not None and value != "auto" and not (
                value.startswith("ray://") or ":" in value):
            raise ValueError(f"ray.address must be null, 'auto', 'ray://host:port' or "
                             f"'host:port', got {value!r}")
        return value


class Storage(Section):
    """Where stage outputs live: a local folder or any fsspec URL (s3://bucket/prefix, gs://...).

    Remote roots are read and written through fsspec (s3fs for s3://), with credentials and
    endpoint from the environment (AWS_*, FSSPEC_S3='{"client_kwargs": {"endpoint_url": ...}}'),
    forwarded to Ray workers. select/, keep/ and the catalog stay local. Each shard is written
    whole to a temporary name and then moved into place, so no half-written shard is read.
    """

    curation: str = "datasets/curation"  # select/, download/ (img2dataset shards), scores/, keep/
    features: str = "datasets/features"  # i2i/, t2i/, t5/, nvs/, i2v/: the features-* caches
    captions: str = "datasets/t2i/captions"  # parts/<shard>.parquet, captions.parquet (caption stage)
    clips: str = "datasets/clips"  # webvid/ (prepare-webvid's clip shards, index.parquet)
    renders: str = "datasets/renders"  # objaverse/, gso/ (render-objaverse), views.parquet


class Profile(Section):
    """Every stage's section for one scale of the platform."""

    mini_world: MiniWorld
    curation: Curation
    t2i_data: T2IData
    captioner: Captioner
    vae: VAE
    vae_train: VAETrain | None = None  # tiny only: stage train-vae
    vision_encoder: VisionEncoder
    text_encoder: TextEncoder
    model: Model
    diffusion: Diffusion
    features: Features
    train: Train
    launch: Launch = Launch()  # how training stages start (in-process or deepspeed)
    sample: Sample
    t2i: T2I
    nvs: NVS
    i2v: I2V
    eval: Eval  # metrics (lumos/eval)
    ray: RaySettings = RaySettings()  # where per-shard stages run (lumos/runtime/ray.py)
    device: Device = "auto"  # model stages: auto takes the GPU when there is one
    storage: Storage = Storage()  # output roots: local folders or fsspec URLs
    ablate: Ablate = Ablate()  # `lumos ablate` grid values (lumos/experiments.py)


class Params(Section):
    """The whole file: the profiles and the key that picks one."""

    profile: str = "tiny"
    profiles: dict[str, Profile]

    @model_validator(mode="after")
    def _profile_exists(self) -> Params:
        if self.profile not in self.profiles:
            raise ValueError(
                f"profile {self.profile!r} is not one of {sorted(self.profiles)}"
            )
        return self

    @property
    def active(self) -> Profile:
        return self.profiles[self.profile]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: {err.error_count()} invalid value(s)"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        shown = e["type"] not in ("extra_forbidden", "missing") and not isinstance(
            e["input"], (dict, list))  # a cross-field rule's input is its whole section
        got = f" (got {e['input']!r})" if shown else ""
        lines.append(f"  {path}: {key}: {msg}{got}")
    return "\n".join(lines)


def parse_params(data: Any, path: Path | str = DEFAULT_PARAMS) -> Params:
    """Validate an already-loaded mapping; errors name ``path`` and the key path."""
    path = Path(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(path, err)) from None


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate ``params.yaml`` (all profiles, so a typo anywhere fails at once)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(data, path)


def load_profile(path: Path | str = DEFAULT_PARAMS) -> Profile:
    """The active profile's sections: what a stage reads."""
    return load_params(path).active
