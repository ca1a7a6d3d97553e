"""Input resolution shared by the decode nodes: which latent format and noise frame, which encoder.

Decisions only (no tensor math). The latent's channel count is checked against the checkpoint
first (the most basic mismatch). The 16-channel families FLUX.1/Z-Image, SD3 and Qwen-Image cannot
be told apart from a latent's shape, so "auto" uses what the graph says (a connected MODEL's
ComfyUI latent format, a VAE's latent shape) and otherwise asks. The noise frame of a noisy
latent comes from the connected MODEL's sampling type (ComfyUI stores a flow model's stopped
latent as x_t / (1 - s); AuraFlow samples SDXL-VAE latents as a flow model), else from the
format's usual ComfyUI LDM (``LatentFormat.comfy_frame``).
"""

from __future__ import annotations

from typing import Optional

from ..pid_core.decoding.latents import check_latent, get_latent_format
from ..pid_core.errors import LatentMismatchError
from . import host
from .node_base import FORMAT_HELP
from .schedule import noise_frame


def latent_format(choice: str, info, latent=None, model=None, vae=None) -> tuple[str, Optional[str]]:
    """(pid_core format name, noise frame or None) to decode ``latent`` with; the decoder checks
    that the format fits the checkpoint."""
    if latent is not None:
        check_latent(latent, info)
    sampling = host.model_sampling(model) if model is not None else None
    frame = noise_frame(sampling) if sampling is not None else None
    if choice != "auto":
        return choice, frame or get_latent_format(choice).comfy_frame
    if model is not None:
        name, cls = host.model_latent_format(model)
        if name is None:
            raise LatentMismatchError(
                f"The connected MODEL uses ComfyUI latent format '{cls}', which PiD cannot decode; "
                f"PiD supports {FORMAT_HELP}. Disconnect the MODEL and set latent_format, or use "
                f"an LDM of a supported family.")
        return name, frame or get_latent_format(name).comfy_frame
    candidates = list(info.latent_formats)
    if vae is not None:
        fits = host.vae_latent_formats(vae)
        candidates = [c for c in candidates if c in fits]
        if not candidates:
            raise LatentMismatchError(
                f"The connected VAE makes {host.vae_description(vae)} latents, but this PiD "
                f"checkpoint decodes {'/'.join(info.latent_formats)} latents ({info.describe()}). "
                f"Connect the VAE of that family or load the matching PiD checkpoint.")
    if len(candidates) == 1:
        return candidates[0], frame or get_latent_format(candidates[0]).comfy_frame
    raise LatentMismatchError(
        f"latent_format is 'auto' but this PiD checkpoint accepts {' or '.join(candidates)} "
        f"latents, which look identical ({info.latent_channels} channels). Connect the LDM's MODEL "
        f"to the 'model' input, or choose latent_format explicitly ({FORMAT_HELP}).")

