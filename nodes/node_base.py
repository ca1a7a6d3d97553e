"""What the PiD node classes share: the category, the IMAGE output, the inputs several nodes take
(one definition each, limits from pid_core) and how an error names its fix in a graph."""

from __future__ import annotations

import functools

from ..pid_core.decoding.latents import COMFY_FORMATS, LATENT_FORMATS
from ..pid_core.decoding.noise import MAX_SEED
from ..pid_core.decoding.sampler import MAX_STEPS
from ..pid_core.errors import PiDError
from . import pid_types

SEED = ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip": (
    "Seed of PiD's own noise (0..2^64-1). Changes fine texture only; the same seed gives the same "
    "image on every device.")})
STEPS = ("INT", {"default": MAX_STEPS, "min": 1, "max": MAX_STEPS, "tooltip": (
    "PiD network calls, 1..4. The distilled checkpoints are trained for 4 steps; fewer is faster "
    "and softer, more would repeat timesteps.")})

PID_MODEL = (pid_types.PID_MODEL, {"tooltip": (
    "From PiD Load Model. 2kto4k and v1.5 checkpoints are trained for 2048..4096 px outputs, 2k ones "
    "for about 2048 px.")})
PROMPT = ("STRING", {"multiline": True, "default": "", "tooltip": (
    "The prompt that made the image or latent (PiD is text-conditioned; the same text gives the most "
    "faithful detail). Empty is allowed.")})
LATENT_FORMAT_CHOICES = ["auto", *COMFY_FORMATS]
FORMAT_HELP = ", ".join(f"{n} = {LATENT_FORMATS[n].description}" for n in COMFY_FORMATS)
LATENT_FORMAT = (LATENT_FORMAT_CHOICES, {"default": "auto", "tooltip": (
    f"How PiD reads the latent: {FORMAT_HELP}. auto = from the connected MODEL or VAE, else the "
    "checkpoint's only format; 16-channel FLUX.1/Z-Image, SD3 and Qwen-Image latents look alike, so "
    "connect the MODEL (or VAE) or choose.")})

# PiD's noise over a batch -> shared_noise
NOISE_CHOICES = {"per image": False, "same for every frame": True}
NOISE = (list(NOISE_CHOICES), {"default": "per image", "tooltip": (
    "per image: image i of a batch gets its own noise (seed + i), as if decoded alone with that seed. "
    "same for every frame: one noise for the whole batch, so the same input frame gives the same "
    "output (less flicker when upscaling video frames). Batches that do not fit are decoded one "
    "frame at a time either way.")})

CATEGORY = "PiD"


class ImageNode:
    """Base of the nodes that return one IMAGE (ComfyUI reads these class attributes)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)


# How to change each input a pid_core error names (``PiDError.input_name``) in a ComfyUI graph.
FIXES = {
    "checkpoint": "in PiD Load Model pick another checkpoint: PiD files named pid_* in "
                  "ComfyUI/models/diffusion_models/, or any decoder in ComfyUI/models/pid/",
    "latent_format": "set latent_format on the PiD node, or connect the LDM's MODEL to its model input",
    "latent": "connect the LATENT of the LDM's sampler, VAE Encode or Load Latent",
    "dtype": "in PiD Load Model set dtype to bf16 or fp32, and attention to pytorch",
    "attention": "set attention to pytorch in PiD Load Model",
    "text": "select gemma_2_2b_it_elm_bf16.safetensors (ComfyUI/models/text_encoders/) as text_encoder in "
            "PiD Load Model, or connect a Gemma-2-2B CLIP",
    "sigma": "connect PiD Stop Sigma to sigma (0 for a finished latent)",
    "output_size": "change output_long_side (PiD Decode Latent) or long_side (PiD Upscale)",
    "tile": "change tile_size (0 = automatic)",
}


def explains_errors(run):
    """Decorate a node's FUNCTION: a pid_core error that names its input gets the graph's fix appended."""
    @functools.wraps(run)
    def node_function(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        except PiDError as exc:
            fix = FIXES.get(exc.input_name or "")
            note = f" (ComfyUI: {fix})"
            if fix and exc.args and isinstance(exc.args[0], str) and not exc.args[0].endswith(note):
                exc.args = (exc.args[0] + note, *exc.args[1:])
            raise
    return node_function
