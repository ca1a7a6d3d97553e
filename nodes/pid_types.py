"""Objects that travel between the PiD nodes (ComfyUI socket type ``PID_MODEL``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PID_MODEL = "PID_MODEL"


@dataclass
class PiDModel:
    """A loaded PiD decoder, its ComfyUI memory-manager handle and the prompt encoder.

    ``patcher`` is a ``comfy.model_patcher.ModelPatcher`` around ``decoder.net`` inside ComfyUI
    (None in plain PyTorch); ComfyUI moves the net between devices through it, so nothing else
    should hold the net on a device. ``text_encoder`` is whatever ``nodes.text_encode`` loaded
    (or a ComfyUI CLIP), None when no encoder was chosen.
    """

    decoder: Any                        # pid_core.decoding.decoder.PiDDecoder
    patcher: Any = None
    text_encoder: Any = None
    checkpoint: str = ""
    text_encoder_name: str = "none"
    dtype: str = "fp32"
    attention: str = "pytorch"

    @property
    def info(self):
        return self.decoder.info

    @property
    def net(self):
        return self.decoder.net

    def describe(self) -> str:
        info = self.info
        envelope = (f"output sides {info.envelope.min_side}..{info.envelope.max_side} px"
                    if info.envelope else "output size unchecked (custom dims)")
        return "\n".join([
            f"checkpoint: {self.checkpoint}",
            f"detected: {info.describe()}",
            f"family {info.family}, version {info.version}, {info.resolution}, "
            f"release {info.release or 'unknown'}",
            f"latent formats: {', '.join(info.latent_formats)}; {envelope}",
            f"compute dtype: {self.dtype}; stored as {info.source_dtype} ({info.layout}); "
            f"attention: {self.attention}; torch.compile: {self.decoder.compile or 'off'}",
            f"text encoder: {self.text_encoder_name}",
        ])
