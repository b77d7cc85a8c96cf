"""Image-to-video data (supplement G.4): WebVid-10M clips, UCF-101 and MSR-VTT layouts."""

from lumos.video.webvid import (
    DownloadError,
    TooShortError,
    UndecodableError,
    VideoError,
    VideoRow,
    camel_to_words,
    download_clip,
    iter_samples,
    prepare_clips,
    prepare_webvid,
    read_msrvtt,
    read_ucf101,
    read_webvid_csv,
    resize_crop,
    sample_frames,
)

__all__ = [
    "DownloadError", "TooShortError", "UndecodableError", "VideoError", "VideoRow",
    "camel_to_words", "download_clip", "iter_samples", "prepare_clips", "prepare_webvid",
    "read_msrvtt", "read_ucf101", "read_webvid_csv", "resize_crop", "sample_frames",
]
