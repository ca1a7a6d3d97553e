"""pid_core: a ComfyUI-free PyTorch implementation of NVIDIA's PiD pixel diffusion decoder.

Public API::

    from pid_core import load_decoder
    dec = load_decoder("model_ema_bf16.pth", device="cuda", dtype="bf16")
    plan = dec.plan(latent.shape)                      # whole image or tiles, from the budget
    image = dec.decode(latent, sigma, text_features, seed=0, steps=4, latent_format="flux", plan=plan)
"""

from .decoding.decoder import DecodeOptions, PiDDecoder, load_decoder
from .decoding.latents import LATENT_FORMATS, LatentFormat, get_latent_format
from .decoding.memory import DecodePlan
from .errors import (
    CheckpointError,
    CheckpointReadError,
    DownloadError,
    LatentMismatchError,
    NonFiniteOutputError,
    NotAPiDCheckpointError,
    PiDError,
    PiDInputError,
    PiDOutOfMemoryError,
    StateDictMismatchError,
    TextEncodingError,
    UnsupportedCheckpointError,
)
from .files.detect import DecoderInfo
from .network.config import RELEASES, RELEASES_BY_NAME, Envelope, PiDNetConfig, Release

__all__ = [
    "load_decoder", "PiDDecoder", "DecoderInfo", "DecodePlan", "DecodeOptions", "PiDNetConfig", "Release",
    "Envelope", "RELEASES", "RELEASES_BY_NAME", "LATENT_FORMATS", "LatentFormat", "get_latent_format",
    "PiDError", "CheckpointError", "CheckpointReadError", "NotAPiDCheckpointError",
    "UnsupportedCheckpointError", "StateDictMismatchError", "PiDInputError", "LatentMismatchError",
    "TextEncodingError", "DownloadError", "PiDOutOfMemoryError", "NonFiniteOutputError",
]
