"""``lumos demo``: a local Gradio web UI over trained checkpoints, as the authors' release ships
(I2I variations, interpolation between two images, T2I at a chosen aspect ratio).

Not :mod:`lumos.demo`, which is the embedded mini-world. Sampling is the pipeline's own
(:mod:`lumos.sample.i2i`, :mod:`lumos.sample.t2i`); this package only loads, wires and serves.
"""

from lumos.webui.app import build_app
from lumos.webui.checkpoints import I2IDemo, T2IDemo, load_i2i, load_t2i, resolve_checkpoint
from lumos.webui.server import launch, running

__all__ = ["I2IDemo", "T2IDemo", "build_app", "launch", "load_i2i", "load_t2i", "resolve_checkpoint",
           "running"]
