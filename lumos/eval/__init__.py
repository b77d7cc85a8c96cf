"""Evaluation metrics, one module per job; each metric names the paper table it reproduces.

=====================================  ==============================================  ====================
metric                                 function                                        paper
=====================================  ==============================================  ====================
FID, KID (Inception features)          ``fid_kid``                                     Table 1 (ImageNet,
                                                                                       COCO), Table 2
                                                                                       (COCO FID-30K),
                                                                                       Figs. 2, 8, 11
CLIP score                             ``ClipScorer``, ``clip_score``                  Fig. 2a
PSNR, SSIM, LPIPS per elevation (GSO)  ``nvs_metrics`` (``psnr``, ``ssim``, ``lpips``)  Table 4, Fig. 5
FVD, KVD (I3D features), PIC           ``video_metrics`` (``fvd_kvd``, ``pic``)        Table 5
mini-world count/colour/position/shape ``alignment_scores``                            beyond the paper
                                                                                       (GenEval-like,
                                                                                       Table 3)
=====================================  ==============================================  ====================

Feature extractors (``features``): Inception / I3D with weights by path, or seeded tiny random
torchvision networks offline. The ``eval`` params section (lumos.config.Eval) holds the
weights paths and the protocols (COCO-30K, ImageNet, UCF-101, MSR-VTT); for example::

    cfg = load_profile().eval
    ext = image_extractor(cfg.inception_weights, cfg.feature_dim, cfg.feature_resolution, cfg.seed)
    fid_kid(samples, reference, ext, resolution=cfg.images["coco30k"].resolution)

Held-out protocols (issue 17), used by the ``evaluate-*`` stages (``stages``): ``references``
(COCO captions, ImageNet val), ``nvs_heldout`` (GSO per-object folders at the GSO cameras),
``i2v_heldout`` (UCF-101 / MSR-VTT clips, streamed), ``long_captions`` (Table 2 with the
captioner's long captions) and ``probes`` (``eval.every``: held-out loss during training).
"""

from lumos.eval.alignment import alignment_score, alignment_scores, detect_objects
from lumos.eval.features import extract_features, image_extractor, video_extractor
from lumos.eval.image_metrics import (
    ClipScorer,
    clip_score,
    fid_kid,
    frechet_kernel_distances,
    gso_views,
    lpips,
    lpips_model,
    nvs_metrics,
    psnr,
    ssim,
    to_uint8,
)
from lumos.eval.video_metrics import fvd_kvd, pic, video_metrics

__all__ = [
    "ClipScorer", "alignment_score", "alignment_scores", "clip_score", "detect_objects",
    "extract_features", "fid_kid", "frechet_kernel_distances", "fvd_kvd", "gso_views",
    "image_extractor", "lpips", "lpips_model", "nvs_metrics", "pic", "psnr", "ssim", "to_uint8",
    "video_extractor", "video_metrics",
]
