"""Input resolution shared by the decode nodes: which latent format, which prompt encoder.

Decisions only (no tensor math): the 16-channel families FLUX.1/Z-Image, SD3 and Qwen-Image
cannot be told apart from a latent's shape, so "auto" uses what the graph says (a connected
MODEL's latent format, the VAE's latent shape) and otherwise asks.
"""

from __future__ import annotations

from ..pid_core.errors import LatentMismatchError, TextEncodingError
from . import host

LATENT_FORMAT_CHOICES = ["auto", "flux", "sd3", "sdxl", "qwenimage", "flux2"]
_FORMAT_HELP = ("flux = FLUX.1 / Z-Image / Boogu, sd3 = SD3 / SD3.5, sdxl = SDXL, "
                "qwenimage = Qwen-Image, flux2 = FLUX.2 / klein")


def latent_format(choice: str, info, model=None, vae=None) -> str:
    """The pid_core latent format name to decode with (the decoder checks it fits the checkpoint)."""
    if choice != "auto":
        return choice
    if model is not None:
        name, cls = host.model_latent_format(model)
        if name is None:
            raise LatentMismatchError(
                f"The connected MODEL uses ComfyUI latent format '{cls}', which PiD cannot decode; "
                f"PiD supports {_FORMAT_HELP}. Disconnect the MODEL and set latent_format, or use "
                f"an LDM of a supported family.")
        return name
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
        return candidates[0]
    raise LatentMismatchError(
        f"latent_format is 'auto' but this PiD checkpoint accepts {' or '.join(candidates)} "
        f"latents, which look identical (16 channels). Connect the LDM's MODEL to the 'model' "
        f"input, or choose latent_format explicitly ({_FORMAT_HELP}).")


def require_text_encoder(pid_model):
    """The prompt encoder of a PiD model, or a TextEncodingError saying how to provide one."""
    if pid_model.text_encoder is None:
        raise TextEncodingError(
            "PiD needs the prompt encoded by Gemma-2-2B, but PiD Load Model has text_encoder = "
            "'none' and no CLIP connected. Put gemma_2_2b_it_elm_bf16.safetensors (Comfy-Org) in "
            "ComfyUI/models/text_encoders/ and select it in PiD Load Model.")
    return pid_model.text_encoder
