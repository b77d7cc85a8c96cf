"""Source readers: each maps one dataset's metadata schema onto the internal one.

A reader is a DuckDB projection over ``read_parquet(<glob or fsspec URL>)`` (or a file glob for
plain folders). The internal schema every later stage sees:

    uid       VARCHAR  unique within the mixture ("<source>:<id>")
    source    VARCHAR  the source's name in params
    url       VARCHAR  what img2dataset fetches (http(s)://, or file:// when allowed)
    caption   VARCHAR  the raw caption (NULL when the source has none)
    width     BIGINT   declared by the metadata (NULL when unknown; `keep` checks the truth)
    height    BIGINT
    aesthetic DOUBLE   declared aesthetic score (NULL when unknown)
    punsafe   DOUBLE   declared NSFW probability (NULL when unknown)
    pwatermark DOUBLE  declared watermark probability (NULL when unknown)
"""

from __future__ import annotations

from dataclasses import dataclass

from lumos.registry import Registry

INTERNAL_COLUMNS = ("uid", "source", "url", "caption", "width", "height", "aesthetic", "punsafe",
                    "pwatermark")


@dataclass(frozen=True)
class Reader:
    """SQL expressions for the internal columns, over the rows of ``scan``."""

    scan: str  # a DuckDB table function of the metadata location, `{path}` filled in
    uid: str
    url: str
    caption: str = "NULL"
    width: str = "NULL"
    height: str = "NULL"
    aesthetic: str = "NULL"
    punsafe: str = "NULL"
    pwatermark: str = "NULL"

    def sql(self, source: str, path: str) -> str:
        quoted = path.replace("'", "''")
        name = source.replace("'", "''")
        return f"""
            SELECT '{name}:' || CAST(({self.uid}) AS VARCHAR) AS uid,
                   '{name}' AS source,
                   CAST(({self.url}) AS VARCHAR) AS url,
                   CAST(({self.caption}) AS VARCHAR) AS caption,
                   CAST(({self.width}) AS BIGINT) AS width,
                   CAST(({self.height}) AS BIGINT) AS height,
                   CAST(({self.aesthetic}) AS DOUBLE) AS aesthetic,
                   CAST(({self.punsafe}) AS DOUBLE) AS punsafe,
                   CAST(({self.pwatermark}) AS DOUBLE) AS pwatermark
            FROM {self.scan.format(path=quoted)}"""


READERS: Registry[Reader] = Registry("source reader")
_PARQUET = "read_parquet('{path}', union_by_name = true, filename = true)"

# LAION-5B: URL, TEXT, WIDTH, HEIGHT, similarity, punsafe, pwatermark, AESTHETIC_SCORE, hash
READERS.register("laion")(Reader(
    _PARQUET, uid="hash", url="URL", caption="TEXT", width="WIDTH", height="HEIGHT",
    aesthetic="AESTHETIC_SCORE", punsafe="punsafe", pwatermark="pwatermark"))
# COYO-700M: id, url, text, width, height, ..., nsfw_score_opennsfw2, watermark_score,
# aesthetic_score_laion_v2
READERS.register("coyo")(Reader(
    _PARQUET, uid="id", url="url", caption="text", width="width", height="height",
    aesthetic="aesthetic_score_laion_v2", punsafe="nsfw_score_opennsfw2",
    pwatermark="watermark_score"))
# SA-1B: image_id, file_name, width, height; `url` where the images are hosted or mounted
READERS.register("sam")(Reader(
    _PARQUET, uid="image_id", url="url", width="width", height="height"))
# JourneyDB: img_path (served URL), prompt, aesthetic when the annotation carries one
READERS.register("journeydb")(Reader(
    _PARQUET, uid="md5(img_path)", url="img_path", caption="prompt"))
# ImageNet-1K index: path (URL or file://), label name as the caption, width, height
READERS.register("imagenet")(Reader(
    _PARQUET, uid="md5(path)", url="path", caption="label", width="width", height="height"))
# A plain folder of images: `metadata` is a glob of image files, fetched as file:// URLs
READERS.register("folder")(Reader(
    "glob('{path}')", uid="md5(file)", url="'file://' || file"))
